"""A fused attention kernel for runs that need no attention pattern.

TransformerBridge re-implements attention step by step (scores, mask, softmax,
weighted sum) so that ``hook_attn_scores``/``hook_pattern`` fire; that is the
"eager" kernel, and at long lengths it costs 2-2.5x PyTorch's fused
``scaled_dot_product_attention`` on this CPU. When no hook needs the pattern,
:func:`fused_attention` runs each layer's *own* transformers attention module (the
bridge's ``original_component``, whose q/k/v/o projections are still the bridge's
hooked linear layers, so ``hook_q/k/v/z`` keep firing) with the wrapped model's
attention implementation switched to ``"sdpa"`` — for the call only; everything is
restored on every exit path.

Hook points inside the bridge's attention re-implementation (``attn.hook_attn_scores``,
``attn.hook_pattern``, ``attn.hook_rot_q/k``, ``attn.hook_in/out``, ``hook_attn_out``…)
do not fire on this path: :func:`needs_eager` says which hook names require the eager
path, and callers must check it. :func:`fused_supported` checks once per model that the
fused path reproduces the eager one.
"""
from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from typing import Any, Iterable

import torch

from .._core import FINAL, model_dtype

__all__ = ["fused_attention", "needs_eager", "fused_supported", "FUSED_OK_HOOKS"]

# hook names that still fire on the fused path
FUSED_OK_HOOKS = re.compile(
    r"^(hook_embed|embed\..*|pos_embed\..*|rotary_emb\.(hook_in|hook_cos|hook_sin)|ln_final\..*|unembed\..*"
    r"|hook_unembed"
    r"|blocks\.\d+\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_in|hook_out|hook_mlp_in|hook_mlp_out"
    r"|ln\d(_post)?\..*|mlp\..*"
    r"|attn\.(hook_q|hook_k|hook_v|hook_z|[qkvo]\..*|q_norm\..*|k_norm\..*)))$"
)


def needs_eager(names: Iterable[Any]) -> bool:
    """Whether any of these hook names (or a callable filter) needs the bridge's own
    step-by-step attention (patterns, scores, attention in/out)."""
    for n in names:
        if not isinstance(n, str) or not FUSED_OK_HOOKS.match(n):
            return True
    return False


def _attn_modules(model) -> list[Any] | None:
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        return None
    out = []
    for b in blocks:
        attn = getattr(b, "attn", None)
        oc = None
        if attn is not None:
            try:
                oc = attn.original_component
            except AttributeError:
                oc = None
        if oc is None or not hasattr(oc, "config"):
            return None
        out.append((attn, oc))
    return out


def _configs(model) -> list[Any]:
    hf = getattr(model, "original_model", None)
    seen, out = set(), []
    for obj in [getattr(hf, "config", None)] + [oc.config for _, oc in (_attn_modules(model) or [])]:
        if obj is not None and id(obj) not in seen:
            seen.add(id(obj))
            out.append(obj)
        for sub in ("text_config",):
            s = getattr(obj, sub, None)
            if s is not None and id(s) not in seen:
                seen.add(id(s))
                out.append(s)
    return out


@contextmanager
def fused_attention(model, implementation: str = "sdpa"):
    """Run the wrapped transformers attention modules with ``implementation`` for the
    duration of the block (see the module docstring)."""
    mods = _attn_modules(model)
    if mods is None:
        raise RuntimeError("this model's attention modules are not bridged transformers modules")
    configs = _configs(model)
    old_impl = [getattr(c, "_attn_implementation", None) for c in configs]
    patched = []
    try:
        for c in configs:
            c._attn_implementation = implementation
        for attn, oc in mods:
            def forward(*args, __oc=oc, **kwargs):
                return __oc(*args, **kwargs)

            # instance attribute, set past nn.Module/bridge __setattr__ (which would
            # forward it to the wrapped module); removed in `finally`
            attn.__dict__["forward"] = forward
            patched.append(attn)
        yield
    finally:
        for attn in patched:
            attn.__dict__.pop("forward", None)
        for c, v in zip(configs, old_impl):
            c._attn_implementation = v


def fused_supported(model) -> bool:
    """Whether the fused path works on this model and reproduces the eager path, the
    definition (checked once per model on a short input through
    :func:`tl_glasses._fastpath.choose`; a mismatch falls back to eager with a
    warning, never to wrong numbers)."""
    from .._fastpath import NotApplicable, choose

    def check():
        run = _runs(model)
        if run is None:
            raise NotApplicable
        return run()

    return choose(model, "attention", "all", [("sdpa", check), ("eager", None)],
                  reference="the bridge's eager attention") == "sdpa"


def _runs(model):
    """A check of the fused path against eager, or None where the fused path does not
    apply (no bridged transformers attention, or ``hook_z`` does not fire there)."""
    if _attn_modules(model) is None:
        return None
    vocab = int(getattr(model.cfg, "d_vocab", 0) or 0)
    if vocab <= 0:
        return None
    hc = getattr(getattr(model, "original_model", None), "config", None)
    window = getattr(hc, "sliding_window", None)
    n = 2 * int(window) + 4 if window and int(window) < 48 else 24  # exercise a native window
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, min(vocab, 1000), (1, n), generator=g)
    dev = next(model.parameters()).device
    toks = toks.to(dev)
    last = f"blocks.{len(model.blocks) - 1}.attn.hook_z"
    from ..capture import Read, run

    at_last = Read(fn=lambda t: t[:, -1].detach().double().clone())
    reads = {FINAL: at_last, last: at_last}
    try:  # the same reads with each kernel, forced (kernel=: no check, this is the check)
        ref = run(model, toks, read=reads, kernel="eager", check=False).acts[FINAL]
        fused = run(model, toks, read=reads, kernel="sdpa", check=False).acts
        got, zgot = fused.get(FINAL), fused.get(last)
    except Exception as exc:  # noqa: BLE001 - any failure means: use eager
        warnings.warn(f"tl_glasses: fused attention unavailable on this model ({exc}); using eager", stacklevel=3)
        return None
    if got is None or zgot is None:  # e.g. GPT-2's joint-QKV bridge: hook_z does not fire
        return None
    if not bool(torch.isfinite(ref).all()):  # the definition itself overflowed: nothing to verify against
        return None
    dt = model_dtype(model)
    tol = 1e-4 if dt in (torch.float32, torch.float64) else 0.1

    def check() -> tuple[float, float, str]:
        rel = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
        return rel, tol, f"relative L2 difference of the final representation, {n} tokens"

    return check
