"""The adapter point for TransformerLens models other than ``TransformerBridge``.

tl_glasses' analysers use only the TransformerLens hook interface (``cfg``,
``run_with_cache``, ``run_with_hooks``, ``hooks()``, ``to_tokens``, ``hook_dict``),
so any model with that surface works: a ``TransformerBridge`` (TransformerLens 4.x,
the target), a ``HookedTransformer`` (TransformerLens 3.x and older), the
synthetic lab model. One name differs between the two families, and this module
maps it:

- y, the final norm's output with its learned scale (what the unembedding reads):
  ``ln_final.hook_out`` on a bridge. A HookedTransformer has no hook there: its
  ``LayerNorm``/``RMSNorm`` return ``hook_normalized(x / scale) * w (+ b)`` and the
  value only reaches ``unembed.hook_in``, which does not fire with
  ``return_type=None``. :func:`as_glasses_model` adds ``ln_final.hook_out``.
- ``ln_final.hook_normalized`` (before the scale), ``hook_embed``,
  ``blocks.{l}.hook_resid_pre/post``, ``blocks.{l}.hook_attn_out/hook_mlp_out``,
  ``blocks.{l}.attn.hook_attn_scores`` (pre-softmax, after the causal mask),
  ``blocks.{l}.attn.hook_pattern`` ``[batch, head, q, k]`` and
  ``blocks.{l}.attn.hook_z`` ``[batch, pos, head, d_head]``: same names and shapes
  on both.

:func:`as_glasses_model` gives a ``HookedTransformer`` the missing
``ln_final.hook_out`` in place: a parameter-free ``HookPoint`` registered as
``model.ln_final.hook_out`` and fed by a permanent PyTorch forward hook on
``model.ln_final``. Logits, ``state_dict`` and every existing hook are unchanged;
the new hook point takes user hooks, caching and backward hooks like any other, and
``reset_hooks()`` leaves the adapter itself in place (it is not a TransformerLens
hook function). :func:`tl_glasses._core.final_hook_name` calls it on demand, so
analysers that ask for the final representation through that function accept a
``HookedTransformer`` as it is.

Caveat: with ``fold_ln=True`` (``HookedTransformer.from_pretrained``'s default) the
final norm's scale is folded into ``W_U``; ``ln_final`` is then ``LayerNormPre`` /
``RMSNormPre`` and its output is the *scale-free* normalised vector. Distances
measured there are those of the representation that model's unembedding reads, but
they are not comparable with a TransformerBridge's; load with
``from_pretrained_no_processing`` (or ``fold_ln=False``) to measure y itself.
:func:`final_norm_scaled` tells which case a model is in.

Nothing here imports TransformerLens at module import: this file works under 3.x and 4.x.
"""
from __future__ import annotations

from typing import Any

from .errors import GlassesError, HookError

__all__ = [
    "PROTOCOL",
    "FINAL",
    "missing_protocol",
    "check_protocol",
    "is_bridge",
    "as_glasses_model",
    "final_hook_name",
    "final_norm_scaled",
    "hook_map",
    "forward_accepts",
    "kv_cache_plumbing",
]

#: the attributes tl_glasses' analysers rely on (TransformerLens' model Protocol
#: plus ``hooks`` and ``hook_dict``)
PROTOCOL = ("cfg", "run_with_cache", "run_with_hooks", "hooks", "to_tokens", "hook_dict")

from ._vocab import FINAL  # noqa: E402  (one definition: tl_glasses._vocab)

_SCALE_FREE_NORMS = ("LayerNormPre", "RMSNormPre")


def missing_protocol(model: Any) -> list[str]:
    """The names in :data:`PROTOCOL` that ``model`` lacks (empty when it conforms)."""
    missing = []
    for name in PROTOCOL:
        try:
            ok = hasattr(model, name)
        except Exception:  # TransformerLens 4 raises ImportError for removed names
            ok = False
        if not ok:
            missing.append(name)
    return missing


def check_protocol(model: Any) -> None:
    """Raise a :class:`GlassesError` naming what is missing unless ``model`` has the
    TransformerLens hook interface tl_glasses uses."""
    missing = missing_protocol(model)
    if missing:
        raise GlassesError(
            f"{type(model).__name__} is not a TransformerLens model: it lacks "
            f"{', '.join(missing)}. Pass a TransformerBridge (tl_glasses.load_model, "
            f"tl_glasses.wrap_model for a transformers model) or a HookedTransformer"
        )


def is_bridge(model: Any) -> bool:
    """True for a TransformerLens 4 ``TransformerBridge`` (or a subclass)."""
    return any(
        c.__name__ == "TransformerBridge" and c.__module__.startswith("transformer_lens.model_bridge")
        for c in type(model).__mro__
    )


def _hook_point_class(model: Any):
    """The ``HookPoint`` class the model's own hook points are instances of."""
    for hp in model.hook_dict.values():
        return type(hp)
    from transformer_lens.hook_points import HookPoint  # present in 3.x and 4.x

    return HookPoint


def _legacy_final_norm(model: Any):
    """``model.ln_final`` when it is a HookedTransformer-style norm without an output
    hook (it has ``hook_normalized`` but the model has no ``ln_final.hook_out``)."""
    ln = getattr(model, "ln_final", None)
    if ln is None or FINAL in model.hook_dict:
        return None
    if "ln_final.hook_normalized" not in model.hook_dict:
        return None
    return ln


def _emit_hook_out(module, inputs, output):
    # a module-level function (not a closure): adapted models still deepcopy and pickle
    return module.hook_out(output)


def as_glasses_model(model: Any) -> Any:
    """Check ``model`` has the TransformerLens hook interface and give it the hook
    names tl_glasses reads; returns the same object.

    A ``TransformerBridge`` is returned untouched. A ``HookedTransformer``
    (TransformerLens 3.x) gains ``ln_final.hook_out`` (see the module docstring):
    in place, idempotent, numerics unchanged.
    """
    check_protocol(model)
    ln = _legacy_final_norm(model)
    if ln is None:
        return model
    if not hasattr(ln, "hook_out"):
        ln.add_module("hook_out", _hook_point_class(model)())
        ln.register_forward_hook(_emit_hook_out)
    if not hasattr(model, "setup"):
        raise HookError(
            f"{type(model).__name__} has no setup() to register the new hook point "
            f"{FINAL!r}; register it in model.hook_dict yourself"
        )
    model.setup()  # HookedRootModule: re-derive hook names, hook_dict and mod_dict
    if FINAL not in model.hook_dict:  # pragma: no cover - defensive
        raise HookError(f"could not register {FINAL!r} on {type(model).__name__}")
    return model


def final_hook_name(model: Any) -> str:
    """The hook that holds y, the final normalised representation (learned scale
    included: what the unembedding reads), for any TransformerLens model.

    ``ln_final.hook_out`` when the model has it (a bridge; a HookedTransformer once
    adapted, which this function does on demand); for a model without a final norm,
    the last block's ``hook_resid_post`` (the unembedding reads the residual stream).
    """
    hd = model.hook_dict
    if FINAL in hd:
        return FINAL
    if _legacy_final_norm(model) is not None:
        as_glasses_model(model)
        return FINAL
    if getattr(model, "ln_final", None) is None and getattr(model.cfg, "normalization_type", "?") is None:
        last = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"
        if last in hd:
            return last
    raise HookError(
        f"{type(model).__name__} has no hook for the final normalised representation "
        f"({FINAL!r}); pass a TransformerBridge (tl_glasses.load_model / wrap_model) "
        f"or a HookedTransformer"
    )


def final_norm_scaled(model: Any) -> bool:
    """Whether the final representation includes the norm's learned scale.

    False for a HookedTransformer whose final norm was folded into ``W_U``
    (``LayerNormPre`` / ``RMSNormPre``, the ``fold_ln=True`` default of
    ``from_pretrained``): there the final hook holds the scale-free normalised
    vector. True otherwise (bridges, unprocessed HookedTransformers, models
    without a final norm, whose unembedding reads the residual stream as it is).
    """
    ln = getattr(model, "ln_final", None)
    if ln is None or is_bridge(model):
        return True
    return type(ln).__name__ not in _SCALE_FREE_NORMS


def forward_accepts(model: Any, name: str) -> bool:
    """Whether ``model(tokens, **{name: ...})`` is accepted: a TransformerBridge passes
    extra keyword arguments (``position_ids``, ``logits_to_keep``…) to the transformers
    model it wraps; ``HookedTransformer.forward`` has a fixed signature and raises
    ``TypeError`` on them."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def hook_map(model: Any) -> dict[str, str]:
    """The hook names tl_glasses reads for the main quantities, for this model."""
    return {
        "final": final_hook_name(model),
        "final_before_scale": "ln_final.hook_normalized",
        "embed": "hook_embed",
        "resid_pre": "blocks.{l}.hook_resid_pre",
        "resid_post": "blocks.{l}.hook_resid_post",
        "attn_scores": "blocks.{l}.attn.hook_attn_scores",
        "pattern": "blocks.{l}.attn.hook_pattern",
        "z": "blocks.{l}.attn.hook_z",
    }


# --- key/value caches across transformers versions -------------------------------------
def _cache_kwarg_to_past(module, args, kwargs):
    """Forward pre-hook on a bridge attention module: transformers >= 5.24 hands the
    decoder layer's key/value cache to attention as ``cache=``; TransformerLens 4.3's
    attention bridges read only ``past_key_values`` (or ``layer_past``) and would
    otherwise run without it (every cached step then attends to itself alone)."""
    if "cache" in kwargs and kwargs.get("past_key_values") is None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None


def _bridge_attention_modules(model: Any) -> list[Any]:
    out = []
    for block in getattr(model, "blocks", None) or []:
        attn = getattr(block, "attn", None)
        if attn is not None and hasattr(attn, "_update_kv_cache"):
            out.append(attn)
    return out


class kv_cache_plumbing:
    """Context manager: within the block, a TransformerBridge's attention modules see
    the key/value cache whichever keyword the installed transformers passes it under
    (``past_key_values`` up to 5.23, ``cache`` from 5.24). A no-op on other models and
    on transformers versions that still pass ``past_key_values``. The pre-hooks it adds
    are removed on every exit path.

    Callers that run a forward with ``past_key_values=`` or ``use_cache=True`` on a
    bridge wrap it in this block; every cached path in tl_glasses is still checked
    against a full recompute before its numbers are used.
    """

    def __init__(self, model: Any):
        self.model = model
        self.handles: list[Any] = []
        self._warnings: Any = None

    def __enter__(self):
        import warnings

        # the bridge passes the cache on as ``past_key_values``, which transformers
        # >= 5.24 renames itself (with a FutureWarning per call)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)
        if is_bridge(self.model):
            try:
                for attn in _bridge_attention_modules(self.model):
                    self.handles.append(attn.register_forward_pre_hook(_cache_kwarg_to_past, with_kwargs=True))
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None
        return False
