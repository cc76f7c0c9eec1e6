"""The mitigation protocol: small values that produce hook lists and/or prompt transforms.

A :class:`Mitigation` offers up to three things, each usable on its own:

* ``transform(spec) -> spec`` — a prompt/items transform on a
  :class:`~tl_glasses.tasks.families.PromptSpec` (separators, prompt structure);
* ``hooks(model) -> [(hook_name, fn), ...]`` — forward hooks, to pass to
  ``model.hooks(fwd_hooks=...)`` together with anything else you hook (tl_glasses'
  analysers hand the mitigation itself to :mod:`tl_glasses.capture`, which runs its
  patch and these hooks before the reads);
* ``patch(model)`` — a context manager for edits that hooks cannot make (e.g. the
  attention mask of a native local layer), undone on every exit path.

``with mitigation.applied(model, fwd_hooks=my_hooks): model(tokens)`` does the last
two at once. Mitigations compose with ``+``.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from .._core import n_layers
from .._vocab import parse_layers as _parse_layers
from ..errors import GlassesError, HookError

__all__ = ["Mitigation", "Compose", "HookList", "parse_layers", "as_mitigation"]

HookList = list[tuple[Any, Callable]]


class Mitigation:
    """Base of every mitigation (subclasses are frozen dataclasses).

    Class attributes: ``name`` (registry name), ``needs_eager`` (its hooks read or edit
    attention scores/patterns, so the fused attention kernel cannot be used while it
    is applied).
    """

    name: str = "mitigation"
    needs_eager: bool = False

    # -- the three capabilities ------------------------------------------------------
    def transform(self, spec):
        """Prompt transform (identity unless overridden)."""
        return spec

    def hooks(self, model) -> HookList:
        """Forward hooks (none unless overridden)."""
        return []

    @contextmanager
    def patch(self, model) -> Iterator[None]:
        """Temporary model edits (none unless overridden); restored on every path."""
        yield

    # -- conveniences ---------------------------------------------------------------
    @property
    def has_transform(self) -> bool:
        return type(self).transform is not Mitigation.transform

    @property
    def has_model_edits(self) -> bool:
        return type(self).hooks is not Mitigation.hooks or type(self).patch is not Mitigation.patch

    @contextmanager
    def applied(self, model, *, fwd_hooks: Sequence[tuple[Any, Callable]] = (),
                bwd_hooks: Sequence[tuple[Any, Callable]] = ()) -> Iterator[Any]:
        """Hooks and patches of this mitigation, plus ``fwd_hooks``/``bwd_hooks`` of
        your own, for the duration of the block; everything added is removed after."""
        from ..capture import hooks_context

        with ExitStack() as stack:
            stack.enter_context(self.patch(model))
            stack.enter_context(
                hooks_context(model, list(self.hooks(model)) + list(fwd_hooks), list(bwd_hooks))
            )
            yield model

    def verify(self, model, tokens: torch.Tensor, *, atol: float = 0.0) -> float:
        """Run ``tokens`` with and without this mitigation's model edits (two runs of the
        capture engine) and return the largest change of the final representation; raise :class:`HookError` if the
        output did not change at all (an edit that had no effect)."""
        from .._core import as_tokens, final_hook_name

        if not self.has_model_edits:
            raise GlassesError(f"{self.label} edits the prompt, not the model: nothing to verify on a run")
        from ..capture import Read, run

        tokens = as_tokens(model, tokens)
        final = final_hook_name(model)
        read = {final: Read(at=-1)}
        base = run(model, tokens, read=read, attn_impl="eager", purpose="verify").acts[final]
        new = run(model, tokens, read=read, mitigation=self, attn_impl="eager", purpose="verify").acts[final]
        change = float((new.double() - base.double()).abs().max())
        if change <= atol:
            raise HookError(
                f"{self.label} did not change the model's output on a {tokens.shape[-1]}-token input: "
                f"the edit was discarded or has no effect at this length (is the sequence longer "
                f"than the window?)"
            )
        return change

    def active_at(self, model, n_tokens: int) -> bool | None:
        """Whether this mitigation changes the forward of an ``n_tokens`` input:
        True, False, or None (unknown). A transform of the prompt always does."""
        return True if self.has_transform else None

    @property
    def label(self) -> str:
        return self.name

    def config(self) -> dict:
        from dataclasses import asdict, is_dataclass

        d = asdict(self) if is_dataclass(self) else {}
        return {"name": self.name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}}

    def __add__(self, other: "Mitigation") -> "Compose":
        return Compose((self, other))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


@dataclass(frozen=True, repr=False)
class Compose(Mitigation):
    """Several mitigations at once: transforms applied in order, hooks concatenated,
    patches nested."""

    parts: tuple[Mitigation, ...] = ()
    name = "compose"

    def __post_init__(self):
        flat: list[Mitigation] = []
        for p in self.parts:
            if not isinstance(p, Mitigation):
                raise GlassesError(f"can only compose mitigations, not {type(p).__name__}")
            flat.extend(p.parts if isinstance(p, Compose) else (p,))
        object.__setattr__(self, "parts", tuple(flat))

    @property
    def needs_eager(self) -> bool:  # type: ignore[override]
        return any(p.needs_eager for p in self.parts)

    @property
    def has_transform(self) -> bool:
        return any(p.has_transform for p in self.parts)

    @property
    def has_model_edits(self) -> bool:
        return any(p.has_model_edits for p in self.parts)

    def transform(self, spec):
        for p in self.parts:
            spec = p.transform(spec)
        return spec

    def hooks(self, model) -> HookList:
        out: HookList = []
        for p in self.parts:
            out.extend(p.hooks(model))
        return out

    @contextmanager
    def patch(self, model):
        with ExitStack() as stack:
            for p in self.parts:
                stack.enter_context(p.patch(model))
            yield

    def active_at(self, model, n_tokens: int) -> bool | None:
        flags = [p.active_at(model, n_tokens) for p in self.parts]
        if any(f is True for f in flags):
            return True
        return None if any(f is None for f in flags) else False

    @property
    def label(self) -> str:
        return "+".join(p.label for p in self.parts)

    def config(self) -> dict:
        return {"name": self.name, "parts": [p.config() for p in self.parts]}


def parse_layers(model, layers, *, what: str) -> list[int]:
    """``None``/"all" -> every layer; ints (negative from the end), "0-4,7" strings or
    lists of them, checked against the model (:func:`tl_glasses._vocab.parse_layers`)."""
    return _parse_layers(model, layers, what=what)


def as_mitigation(m) -> Mitigation | None:
    """A Mitigation, a spec string ("separators:3", "sliding_window:64@0-5", …), or
    None/"none" (the baseline)."""
    if m is None or (isinstance(m, str) and m.strip().lower() in ("", "none", "baseline")):
        return None
    if isinstance(m, Mitigation):
        return m
    if isinstance(m, str):
        from ._registry import parse_mitigation

        return parse_mitigation(m)
    if isinstance(m, (list, tuple)):
        parts = [as_mitigation(x) for x in m]
        parts = [p for p in parts if p is not None]
        return Compose(tuple(parts)) if parts else None
    raise GlassesError(f"a mitigation is a Mitigation, a spec string, or None; got {type(m).__name__}")
