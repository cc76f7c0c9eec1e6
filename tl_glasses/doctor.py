"""``tl-glasses doctor``: is this installation computing the right numbers?

It prints the versions that decide the numbers and the state of the embedded models,
then runs, in seconds on the tiny random models (llama, gemma3 with a sliding
window, gpt2), every self-check tl_glasses relies on:

- the bridge's logits equal plain ``transformers`` on the same weights;
- each fast scoring path (candidate tree, key/value cache) equals the plain recompute
  (one full forward per candidate), inside and beyond a sliding window;
- each fast generation path (cached, batched) equals one-prompt-at-a-time decoding
  with a full forward per step;
- the fused attention kernel equals the bridge's eager attention.

``--model NAME`` runs the same checks on that model too (its logits against the plain
``transformers`` model loaded from the same cache, for the embedded ones). Every
check is independent of the others: a path is compared with its definition, never
with another fast path. The report runs :func:`model_checks` on its model first.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from ._vocab import model_name

__all__ = ["Line", "environment", "model_checks", "tiny_checks", "doctor"]


@dataclass
class Line:
    """One check: what was compared, whether it held, by how much."""

    model: str
    check: str
    ok: bool
    max_abs_diff: float | None = None
    tolerance: float | None = None
    detail: str = ""

    def render(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        num = ""
        if self.max_abs_diff is not None:
            num = f"  max |diff| {self.max_abs_diff:.2e}"
            if self.tolerance is not None:
                num += f" (tolerance {self.tolerance:.1e})"
        return f"[{status}] {self.model:<16} {self.check:<46}{num}  {self.detail}".rstrip()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment() -> dict[str, Any]:
    """Versions and embedded models (installed, cached)."""
    from ._fastpath import versions
    from .models import list_models

    info: dict[str, Any] = {"versions": versions(("torch", "transformers", "transformer-lens", "tl-glasses",
                                                  "gguf", "safetensors", "numpy", "tokenizers"))}
    df = list_models()
    info["models"] = df[["name", "installed", "cached", "install", "cache"]].to_dict("records")
    return info


def _run(model_label: str, check: str, fn: Callable[[], tuple[float, float, str]]) -> Line:
    try:
        diff, tol, detail = fn()
    except Exception as exc:  # noqa: BLE001 - a crash is a failed check
        return Line(model_label, check, False, None, None, f"{type(exc).__name__}: {exc}")
    ok = bool(diff <= tol) and not math.isnan(diff)
    return Line(model_label, check, ok, float(diff), float(tol), detail)


def _logits_check(model, hf, tokens: torch.Tensor) -> Callable[[], tuple[float, float, str]]:
    def run():
        with torch.no_grad():
            ours = model(tokens).double()
            ref = hf(tokens.to(next(hf.parameters()).device)).logits.double()
        diff = float((ours - ref).abs().max())
        tol = 1e-4 * max(1.0, float(ref.abs().max())) if ref.dtype == torch.float64 and \
            next(hf.parameters()).dtype == torch.float32 else 0.1 * max(1.0, float(ref.abs().max()))
        return diff, tol, f"{tokens.shape[-1]} tokens"
    return run


def _candidates(model, text: str, tokens: torch.Tensor, top: int):
    from .tasks.scoring import candidate_token_ids

    ids, _ = candidate_token_ids(model, text, tokens, [str(v) for v in range(top + 1)])
    longest = max(range(len(ids)), key=lambda j: len(ids[j]))
    return [ids[j] for j in dict.fromkeys([0, top // 2, longest, len(ids) - 1])]


def _probes(model, window: int | None, n_beyond: int | None):
    """(label, context, candidates): a counting item after the answer prefix as the task
    scorer builds it, and, on a model with a sliding window, a short context that fits
    inside the window and an item long enough to run past it."""
    from .tasks import get_task
    from .tasks.evaluate import prepare_item

    out = []
    if window:
        text = "1 1 1 ="
        toks = model.to_tokens(text)[0][: max(2, int(window) - 4)]
        out.append(("within window", toks, _candidates(model, text, toks, 12)))
    n = 6
    tk = prepare_item(model, get_task("count_ones").item(n), with_prefix=True)
    if window and tk.tokens.shape[-1] <= int(window):
        n = n_beyond or int(window) // 2 + 8
        tk = prepare_item(model, get_task("count_ones").item(n), with_prefix=True)
    where = ("beyond window" if tk.tokens.shape[-1] > int(window) else "within window") if window else ""
    out.append((where, tk.tokens, _candidates(model, tk.text, tk.tokens, 2 * n + 20)))
    return out


def model_checks(model, *, label: str | None = None, hf=None, n_beyond: int | None = None) -> list[Line]:
    """Every self-check on ``model``: logits vs ``hf`` (the plain transformers model on
    the same weights, when given), each scoring and generation fast path against its
    definition (within and, when the model has a sliding window, beyond it), and the
    fused attention kernel against eager."""
    from .analysis import _fused
    from .tasks.scoring import _hf_config, generation_checks, scoring_checks

    label = label or model_name(model)
    lines: list[Line] = []
    if hf is not None:
        vocab = int(model.cfg.d_vocab)
        g = torch.Generator().manual_seed(0)
        toks = torch.randint(0, min(vocab, 5000), (1, 48), generator=g)
        lines.append(_run(label, "logits = plain transformers", _logits_check(model, hf, toks)))
    window = getattr(_hf_config(model), "sliding_window", None)
    for where, ctx, probe in _probes(model, window, n_beyond):
        suffix = f" [{where}]" if where else ""
        checks = scoring_checks(model, ctx, probe)
        if not checks:
            lines.append(Line(label, f"scoring fast paths{suffix}", True, detail="none offered: recompute only"))
        for name, fn in checks.items():
            lines.append(_run(label, f"scoring {name} = recompute{suffix}", fn))
        for name, fn in generation_checks(model, [ctx], max_new_tokens=8).items():
            lines.append(_run(label, f"generation {name} = one-by-one{suffix}", fn))
    run = _fused._runs(model)
    if run is None:
        lines.append(Line(label, "fused attention", True, detail="not applicable: eager only"))
    else:
        lines.append(_run(label, "fused attention = eager", run))
    return lines


def tiny_checks() -> list[Line]:
    """:func:`model_checks` on the three tiny architectures, against their plain
    transformers twins (same seed, same weights)."""
    from .models import tiny_hf_model, tiny_model

    lines = []
    for arch, kw in (("llama", {}), ("gemma3", dict(n_layers=3, sliding_window=16)), ("gpt2", {})):
        model = tiny_model(arch, seed=0, **kw)
        hf = tiny_hf_model(arch, seed=0, **kw)
        lines += model_checks(model, label=f"tiny:{arch}", hf=hf)
    return lines


def doctor(model: str | None = None, *, tiny: bool = True, print_fn=print) -> tuple[bool, list[Line], dict]:
    """Print the environment and run the checks; returns ``(all ok, lines, environment)``."""
    env = environment()
    print_fn("tl_glasses doctor")
    print_fn("  " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    for m in env["models"]:
        state = "cached" if m["cached"] else "installed, not cached yet" if m["installed"] else \
            f"not installed ({m['install']})"
        print_fn(f"  model {m['name']}: {state}")
    lines: list[Line] = []

    def emit(new: list[Line]):
        for ln in new:
            print_fn(ln.render())
        lines.extend(new)

    if tiny:
        emit(tiny_checks())
    if model:
        from .models import EMBEDDED, load_hf, load_model

        m = load_model(model)
        hf = None
        if model.lower() in EMBEDDED:
            hf = load_hf(model)[0]
        elif model.startswith(("tiny:", "tiny-")):
            from .models import tiny_hf_model

            arch = model[5:]
            hf = tiny_hf_model(arch, seed=0, **({"n_layers": 3} if arch == "gemma3" else {}))
        emit(model_checks(m, label=model, hf=hf))
    ok = all(ln.ok for ln in lines)
    n_bad = sum(not ln.ok for ln in lines)
    print_fn(f"{len(lines) - n_bad} of {len(lines)} checks passed" + ("" if ok else f"; {n_bad} FAILED"))
    return ok, lines, env
