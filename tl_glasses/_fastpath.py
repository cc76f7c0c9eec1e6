"""Fast paths are chosen by ground truth, never by each other.

A fast path (the candidate tree and the key/value cache in teacher-forced scoring,
cached and batched decoding in generation, the fused attention kernel) computes the
same numbers as a slow definition (one full forward per candidate, one prompt at a
time, the bridge's eager attention). Each fast path is checked once per model (and
regime, e.g. inside vs beyond a sliding window) against that definition on a small
probe; the fastest that agrees is used. When none agrees a :class:`FastPathError`
names the installed versions and the differences seen: a number from an unverified
path is never written.

Every check is logged on the model (:func:`checks`), so ``tl-glasses doctor`` and the
report can say which path was verified, against what, and by how much.
"""
from __future__ import annotations

import importlib.metadata as md
import platform
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from .errors import GlassesError

__all__ = ["FastPathError", "NotApplicable", "Check", "choose", "checks", "forget", "exclude", "versions", "PACKAGES"]

#: the packages whose versions decide the numbers
PACKAGES = ("torch", "transformers", "transformer-lens", "tl-glasses", "gguf", "safetensors")


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Python and the installed versions of ``packages`` (missing ones left out)."""
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


class FastPathError(GlassesError):
    """No fast path reproduces the exact definition on this model and these versions."""


class NotApplicable(Exception):
    """Raised by a check whose fast path does not apply to this model (skipped quietly)."""


@dataclass
class Check:
    """One comparison of a fast path with its definition."""

    kind: str  # "scoring", "generation", "attention"
    regime: str  # e.g. "within window", "beyond window", "all"
    path: str  # the fast path checked
    reference: str  # what it was compared with
    ok: bool
    max_abs_diff: float | None
    tolerance: float | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_CHOSEN: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_LOG: "weakref.WeakKeyDictionary[Any, list[Check]]" = weakref.WeakKeyDictionary()
# models that cannot be weak-referenced (rare): keyed by id, kept for the process
_CHOSEN_ID: dict[int, dict] = {}
_LOG_ID: dict[int, list[Check]] = {}


def _store(table, fallback, model):
    try:
        return table.setdefault(model, {} if table is _CHOSEN else [])
    except TypeError:
        return fallback.setdefault(id(model), {} if fallback is _CHOSEN_ID else [])


def checks(model) -> list[Check]:
    """Every fast-path check run on ``model`` so far, oldest first."""
    return list(_store(_LOG, _LOG_ID, model))


def forget(model) -> None:
    """Drop the verified choices for ``model`` (the next call checks again)."""
    _store(_CHOSEN, _CHOSEN_ID, model).clear()
    _store(_LOG, _LOG_ID, model).clear()


def exclude(model, kind: str, path: str) -> None:
    """Never use ``path`` for ``kind`` ("scoring", "generation", "attention") on
    ``model`` again: a check elsewhere (``tl-glasses doctor``, the report's first step)
    saw it disagree with its definition."""
    ex = _store(_CHOSEN, _CHOSEN_ID, model).setdefault("excluded", set())
    ex.add((kind, path))
    for key in [k for k in _store(_CHOSEN, _CHOSEN_ID, model) if k != "excluded" and k[0].split(" ")[0] == kind]:
        del _store(_CHOSEN, _CHOSEN_ID, model)[key]


#: a check returns (max absolute difference, tolerance, detail); raising means "failed"
CheckFn = Callable[[], "tuple[float, float, str]"]


def choose(model, kind: str, regime: str, candidates: Sequence[tuple[str, CheckFn | None]], *,
           reference: str, fallback: str | None = None) -> str:
    """The first of ``candidates`` (fastest first) whose check passes on ``model``.

    Each candidate is ``(name, check)``; ``check=None`` marks the definition itself
    (always agrees, never checked). The choice is remembered per (model, kind,
    regime). ``fallback`` is returned when no candidate is checkable at all (every
    fast path unsupported). When every checked candidate fails, raises
    :class:`FastPathError`.
    """
    chosen = _store(_CHOSEN, _CHOSEN_ID, model)
    key = (kind, regime)
    if key in chosen:
        return chosen[key]
    log = _store(_LOG, _LOG_ID, model)
    failures = []
    def settle(name: str) -> str:
        chosen[key] = name
        if failures:
            import warnings

            warnings.warn(f"tl_glasses: the {kind} fast path {'; '.join(failures)} does not reproduce "
                          f"{reference} on this model; using {name!r}, which does", stacklevel=4)
        return name

    excluded = chosen.get("excluded", set())
    for name, fn in candidates:
        if (kind.split(" ")[0], name) in excluded:
            failures.append(f"{name} (failed an earlier check)")
            continue
        if fn is None:
            return settle(name)
        try:
            diff, tol, detail = fn()
            ok = bool(diff <= tol)  # NaN fails
        except NotApplicable:
            continue
        except Exception as exc:  # noqa: BLE001 - a path that crashes does not agree
            diff, tol, detail, ok = None, None, f"{type(exc).__name__}: {exc}", False
        log.append(Check(kind, regime, name, reference, ok, diff, tol, detail))
        if ok:
            return settle(name)
        failures.append(name if diff is None else f"{name} (max difference {diff:.3g}, tolerance {tol:.2g})")
        if diff is None:
            failures[-1] += f" ({detail})"
    if not candidates and fallback is not None:
        chosen[key] = fallback
        return fallback
    vs = ", ".join(f"{k} {v}" for k, v in versions().items())
    raise FastPathError(
        f"no fast {kind} path reproduces {reference} on this model ({regime}): "
        f"{'; '.join(failures)}. Installed: {vs}. Install the tested versions "
        f"(bash scripts/setup.sh uses the lock in requirements/lock.txt), run `tl-glasses doctor`, "
        f"or pass the exact slow method explicitly (method='recompute' for scoring, kv_cache=False "
        f"with batch_size=1 for generation)."
    )
