"""Shared plumbing for analysers: prompts to tokens, model checks, hook hygiene."""
from __future__ import annotations

import difflib
from typing import Any, Iterable

import torch

from .errors import ContextLengthError, GlassesError, HookError, NumericalError

__all__ = [
    "as_tokens",
    "n_layers",
    "n_heads",
    "d_model",
    "n_ctx",
    "model_device",
    "model_dtype",
    "require_eval",
    "check_hooks",
    "hook_snapshot",
    "hooks_context",
    "check_finite",
    "FINAL",
    "final_hook_name",
    "resid_name",
]

from ._vocab import FINAL  # noqa: E402  (the final norm's output, learned scale included)


def n_layers(model) -> int:
    return int(model.cfg.n_layers)


def n_heads(model) -> int:
    return int(model.cfg.n_heads)


def d_model(model) -> int:
    return int(model.cfg.d_model)


def n_ctx(model) -> int | None:
    v = getattr(model.cfg, "n_ctx", None)
    return int(v) if v else None


def model_device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device(getattr(model.cfg, "device", None) or "cpu")


def model_dtype(model) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def final_hook_name(model) -> str:
    """The hook holding y, the final normalised representation (learned scale
    included), for any TransformerLens model: ``FINAL`` on a TransformerBridge; on a
    TransformerLens 3.x ``HookedTransformer`` the same name, which
    :func:`tl_glasses.compat.as_glasses_model` adds on first use. Analysers use this,
    not the ``FINAL`` constant, so that they accept both kinds of model."""
    if FINAL in model.hook_dict:
        return FINAL
    from .compat import final_hook_name as _final

    return _final(model)


def resid_name(layer: int, where: str = "pre") -> str:
    return f"blocks.{layer}.hook_resid_{where}"


def as_tokens(model, prompt, *, prepend_bos: bool | None = None) -> torch.Tensor:
    """A prompt as a ``[1, pos]`` LongTensor on the model's device.

    Strings go through ``model.to_tokens`` (TransformerLens' BOS convention);
    token tensors are used exactly as given (no BOS added).
    """
    if isinstance(prompt, str):
        if not prompt:
            raise GlassesError("the prompt is empty; pass a non-empty string or token tensor")
        kw = {} if prepend_bos is None else {"prepend_bos": prepend_bos}
        try:  # never let to_tokens cut the prompt to n_ctx silently: the check below refuses it
            toks = model.to_tokens(prompt, truncate=False, **kw)
        except TypeError:
            toks = model.to_tokens(prompt, **kw)
    elif isinstance(prompt, torch.Tensor):
        if prompt.is_floating_point():
            raise GlassesError(
                "expected token ids (an integer tensor), got a floating-point tensor; "
                "pass token ids, or a string"
            )
        toks = prompt.long()
        if toks.ndim == 1:
            toks = toks[None]
        if toks.ndim != 2 or toks.shape[0] != 1:
            raise GlassesError(
                f"expected one sequence of token ids, shape [pos] or [1, pos]; got {tuple(prompt.shape)}"
            )
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) for t in prompt):
        toks = torch.tensor([list(prompt)], dtype=torch.long)
    else:
        raise GlassesError(
            f"a prompt is a string or a tensor of token ids, not {type(prompt).__name__}"
        )
    if toks.shape[-1] == 0:
        raise GlassesError("the prompt has no tokens; pass a non-empty string or token tensor")
    ctx = n_ctx(model)
    if ctx is not None and toks.shape[-1] > ctx:
        raise ContextLengthError(
            f"the sequence has {toks.shape[-1]} tokens but the model's context is {ctx}; "
            f"use lengths of at most {ctx} tokens (prompt text included)"
        )
    vocab = getattr(model.cfg, "d_vocab", None)
    if vocab and (int(toks.max()) >= vocab or int(toks.min()) < 0):
        raise GlassesError(
            f"token ids must lie in [0, {vocab}); got ids from {int(toks.min())} to {int(toks.max())}"
        )
    return toks.to(model_device(model))


def require_eval(model) -> None:
    if getattr(model, "training", False):
        raise GlassesError(
            "the model is in training mode (dropout would make measurements random); "
            "call model.eval() first"
        )


def _hook_names(model) -> set[str]:
    return set(model.hook_dict.keys())


def check_hooks(model, names: Iterable[str], *, purpose: str = "this analysis") -> None:
    """Raise a HookError naming every missing hook and the closest existing names.

    Reads the model and never changes it: on a TransformerLens 3.x HookedTransformer
    ``ln_final.hook_out`` counts as present when :mod:`tl_glasses.compat` can add it;
    the capture engine adds it right before the run that hooks it."""
    names = list(names)
    adaptable: set[str] = set()
    if FINAL in names and FINAL not in model.hook_dict:
        from .compat import _legacy_final_norm

        if _legacy_final_norm(model) is not None:
            adaptable.add(FINAL)
    have = _hook_names(model)
    aliases = getattr(model, "_hook_alias_registry", None) or {}
    missing = []
    for n in names:
        if n in have or n in aliases or n in adaptable:
            continue
        try:  # TransformerBridge resolves aliases (hook_resid_pre, hook_z, …) lazily
            model._resolve_hook_point(n, None, model.hook_dict)  # type: ignore[attr-defined]
            continue
        except Exception:
            pass
        missing.append(n)
    if missing:
        hints = {m: difflib.get_close_matches(m, sorted(have), n=3) for m in missing}
        detail = "; ".join(f"{m!r} (closest: {', '.join(h) or 'none'})" for m, h in hints.items())
        raise HookError(
            f"{purpose} needs hook points this model does not have: {detail}. "
            f"Load the model with tl_glasses.load_model or wrap it with tl_glasses.wrap_model "
            f"(TransformerBridge, eager attention) so these hooks exist"
        )


def hook_snapshot(model) -> dict[str, tuple[int, ...]]:
    """Identity of every hook function attached to the model, per hook point and
    direction: compare snapshots before and after a call to prove nothing leaked."""
    snap: dict[str, tuple[int, ...]] = {}
    seen = set()
    for name, hp in model.hook_dict.items():
        if id(hp) in seen:
            continue
        seen.add(id(hp))
        fwd = tuple(id(h) for h in getattr(hp, "fwd_hooks", []))
        bwd = tuple(id(h) for h in getattr(hp, "bwd_hooks", []))
        torch_f = tuple(hp._forward_hooks.keys()) + tuple(hp._forward_pre_hooks.keys())
        torch_b = tuple(hp._backward_hooks.keys())
        if fwd or bwd or torch_f or torch_b:
            snap[name] = fwd + (-1,) + bwd + (-2,) + torch_f + (-3,) + torch_b
    return snap


def check_finite(t: torch.Tensor, where: str) -> None:
    if not torch.isfinite(t).all():
        kind = "NaN" if torch.isnan(t).any() else "Inf"
        raise NumericalError(
            f"{kind} appeared at {where}; in float16 this usually means overflow: "
            f"run in bfloat16 or float32 (dtype=torch.bfloat16), or shorten the sequence"
        )


def first_nonfinite_hook(model, tokens: torch.Tensor) -> str | None:
    """Run once (through the capture engine) and return the first hook (in execution
    order) whose output holds NaN/Inf."""
    order: list[str] = []
    bad: list[str] = []

    def spy(t, hook):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            order.append(hook.name)
            if not bad and not torch.isfinite(t).all():
                bad.append(hook.name)
        return None

    from .capture import run

    names = [n for n in model.hook_dict if n.startswith(("hook_embed", "blocks.", "ln_final"))]
    run(model, tokens, write=[(lambda n, s=set(names): n in s, spy)], attn_impl="eager", check=False)
    return bad[0] if bad else None


def raise_if_nonfinite(model, tokens: torch.Tensor, t: torch.Tensor, what: str) -> None:
    """If ``t`` is not finite, find the first hook where NaN/Inf appears and raise."""
    if torch.isfinite(t).all():
        return
    where = first_nonfinite_hook(model, tokens) or what
    check_finite(t, f"{where} (first hook with a non-finite value; dtype {model_dtype(model)})")


def __getattr__(name: str) -> Any:
    # hooks_context lives in the capture engine's backend; kept importable from here
    if name == "hooks_context":
        from .capture import hooks_context

        return hooks_context
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
