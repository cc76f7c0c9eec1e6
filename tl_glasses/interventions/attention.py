"""Attention-span mitigations (App. C.6): a sliding window patched in by hooks, and
making a model's native local (sliding-window) layers global.

* :func:`sliding_window` masks the pre-softmax scores of chosen layers
  (``blocks.{l}.attn.hook_attn_scores``) so that each query sees only the last
  ``window`` keys, itself included (the convention of transformers' sliding window).
  Masked entries are filled with ``finfo(dtype).min`` (never ``-inf``: a fully masked
  row stays finite). A companion hook on ``hook_pattern`` checks, in every forward,
  that the masked keys really got zero attention — a bridge that fires
  ``hook_attn_scores`` on a copy and discards the edit raises :class:`HookError`.
* :func:`global_attention` lifts the window of native local layers (Gemma 3: every
  layer but 5, 11, 17 has a 512-token window). A hook on attention scores cannot
  un-mask a score that the mask already replaced, so this edits the attention mask
  the model hands to those layers, for the duration of the call only (a forward
  pre-hook on the layer's attention module; removed on every exit path). Only the
  span changes: the layer keeps its own rotary base (Gemma 3 local layers: 10 000).
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .._core import final_hook_name, n_ctx
from ..errors import GlassesError, HookError
from ._base import HookList, Mitigation, parse_layers

__all__ = [
    "SlidingWindow",
    "GlobalAttention",
    "sliding_window",
    "global_attention",
    "native_local_layers",
    "sliding_window_mask",
]


def sliding_window_mask(q_len: int, k_len: int, window: int, device=None) -> torch.Tensor:
    """``[q_len, k_len]`` bool, True where a key is OUTSIDE the window of the query
    (queries are the last ``q_len`` of ``k_len`` positions; causal future excluded
    elsewhere)."""
    qpos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    kpos = torch.arange(k_len, device=device)[None, :]
    return (qpos - kpos) >= window


def _hf_config(model):
    hf = getattr(model, "original_model", None)
    return getattr(hf, "config", None)


def native_local_layers(model) -> tuple[list[int], int | None]:
    """The layers that have a native sliding window, and its size (``[]``, ``None`` for
    a model with global attention everywhere)."""
    hc = _hf_config(model)
    types = getattr(hc, "layer_types", None) or getattr(model.cfg, "layer_types", None)
    window = getattr(hc, "sliding_window", None) or getattr(model.cfg, "window_size", None)
    if types:
        local = [i for i, t in enumerate(types) if "sliding" in str(t) or "local" in str(t)]
        return (local, int(window) if window else None) if local else ([], None)
    attn_types = getattr(model.cfg, "attn_types", None)  # HookedTransformer (TL 3.x)
    if attn_types:
        local = [i for i, t in enumerate(attn_types) if t == "local"]
        return (local, int(window) if window else None) if local else ([], None)
    return [], None


# --------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class SlidingWindow(Mitigation):
    """Each query of the chosen layers attends only to the last ``window`` keys."""

    window: int = 64
    layers: tuple[int, ...] | None = None
    name = "sliding_window"
    needs_eager = True

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int):
            raise GlassesError(f"sliding_window(window=...) is an integer number of keys, got {self.window!r}")
        if self.window <= 0:
            raise GlassesError(
                f"sliding_window(window={self.window}): the window must be at least 1 key "
                f"(1 = each token sees only itself)"
            )
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in (
                [self.layers] if isinstance(self.layers, int) else self.layers)))

    def _check_model(self, model) -> list[int]:
        ctx = n_ctx(model)
        if ctx is not None and self.window > ctx:
            raise GlassesError(
                f"sliding_window(window={self.window}) is longer than the model's context ({ctx}); "
                f"it would mask nothing. Use a window of at most {ctx} keys"
            )
        return parse_layers(model, self.layers, what=self.label)

    def hooks(self, model) -> HookList:
        layers = self._check_model(model)
        w = self.window
        pending: dict[int, int] = {}  # layer -> number of keys masked for the last query
        label = self.label

        def on_scores(scores: torch.Tensor, hook, layer: int):
            q, k = scores.shape[-2], scores.shape[-1]
            far = sliding_window_mask(q, k, w, scores.device)
            if bool(far.any()):
                scores = scores.masked_fill(far, torch.finfo(scores.dtype).min)
                pending[layer] = int(far[-1].sum())
            return scores

        def on_pattern(pattern: torch.Tensor, hook, layer: int):
            cut = pending.pop(layer, None)
            if cut:
                leaked = float(pattern[..., -1, :cut].abs().max())
                if leaked != 0.0:
                    raise HookError(
                        f"{label}: the edited attention scores of layer {layer} did not reach the "
                        f"softmax (keys outside the window still get weight {leaked:.3g}); this "
                        f"model's attention fires hook_attn_scores on a copy. Load it with "
                        f"tl_glasses.load_model (eager attention) or use another bridge"
                    )
            return None

        def at_end(t, hook):
            if pending:
                missing = sorted(pending)
                pending.clear()
                raise HookError(
                    f"{label}: attention scores of layers {missing} were masked but their "
                    f"hook_pattern never fired, so the edit cannot be checked; the attention "
                    f"path of this model does not run through the hooked softmax"
                )
            return None

        out: HookList = []
        for l in layers:
            out.append((f"blocks.{l}.attn.hook_attn_scores", _bind(on_scores, layer=l)))
            out.append((f"blocks.{l}.attn.hook_pattern", _bind(on_pattern, layer=l)))
        out.append((final_hook_name(model), at_end))
        return out

    def active_at(self, model, n_tokens: int) -> bool | None:
        return n_tokens > self.window

    @property
    def label(self) -> str:
        lay = "" if self.layers is None else "@" + _fmt_layers(self.layers)
        return f"sliding_window:{self.window}{lay}"


def _bind(fn, **kw):
    def hook(t, hook):
        return fn(t, hook, **kw)

    return hook


def _fmt_layers(layers) -> str:
    layers = sorted(layers)
    parts = []
    for _, grp in itertools.groupby(enumerate(layers), lambda x: x[1] - x[0]):
        g = [x[1] for x in grp]
        parts.append(str(g[0]) if len(g) == 1 else f"{g[0]}-{g[-1]}")
    return ",".join(parts)


# --------------------------------------------------------------------------------
def _lift_window(mask: Any) -> tuple[Any, bool]:
    """The causal (global) version of a sliding-window attention mask, keeping padding.

    ``mask`` is what transformers hands a layer: ``None`` (plain causal, nothing to
    lift), a 4D bool mask (True = attend; sdpa) or a 4D additive float mask (0 or a
    very negative value; eager). Returns the new mask and whether it changed.
    """
    if mask is None:
        return None, False
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
        raise HookError(
            f"global_attention: the attention mask handed to the layer is a "
            f"{type(mask).__name__}{'' if not isinstance(mask, torch.Tensor) else f' of shape {tuple(mask.shape)}'}"
            f", not a 4D tensor; this attention implementation is not supported (use eager or sdpa)"
        )
    q, k = mask.shape[-2], mask.shape[-1]
    if mask.dtype == torch.bool:
        allowed = mask
    else:
        allowed = mask > torch.finfo(mask.dtype).min / 2
    off = k - q
    qpos = torch.arange(off, k, device=mask.device)[:, None]
    kpos = torch.arange(k, device=mask.device)[None, :]
    causal = kpos <= qpos
    # a padded key is masked even for the query at its own position
    r = torch.arange(q, device=mask.device)
    diag = allowed[..., r, off + r]  # [b, 1, q]
    pad = torch.zeros(*allowed.shape[:-2], 1, k, dtype=torch.bool, device=mask.device)
    pad[..., 0, off:] = ~diag
    new_allowed = allowed | (causal & ~pad)
    lifted = new_allowed & ~allowed
    if not bool(lifted.any()):
        return mask, False
    if mask.dtype == torch.bool:
        return new_allowed, True
    return mask.masked_fill(lifted, 0.0), True


_ACTIVE: dict[int, dict] = {}  # id(model) -> state of an applied global_attention patch


@dataclass(frozen=True, repr=False)
class GlobalAttention(Mitigation):
    """Make chosen native local (sliding-window) layers global (all layers by default)."""

    layers: tuple[int, ...] | None = None
    name = "global_attention"

    def __post_init__(self):
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in (
                [self.layers] if isinstance(self.layers, int) else self.layers)))

    def chosen_layers(self, model) -> list[int]:
        local, window = native_local_layers(model)
        if not local:
            raise GlassesError(
                f"{self.label}: this model has no native local (sliding-window) attention layers; "
                f"every layer already attends globally. To compare with local attention, apply "
                f"tl_glasses.sliding_window(window=...) instead"
            )
        if self.layers is None:
            return local
        chosen = parse_layers(model, list(self.layers), what=self.label)
        bad = [l for l in chosen if l not in local]
        if bad:
            raise GlassesError(
                f"{self.label}: layers {bad} are already global; the native local layers are "
                f"{_fmt_layers(local)} (window {window})"
            )
        return chosen

    @contextmanager
    def patch(self, model):
        chosen = self.chosen_layers(model)
        key = id(model)
        if key in _ACTIVE:
            raise GlassesError(f"{self.label} is already applied to this model")
        state = {"fired": set(), "lifted": set(), "layers": chosen}
        handles = []

        def pre_hook(module, args, kwargs, layer):
            if "attention_mask" in kwargs:
                kwargs = dict(kwargs)
                kwargs["attention_mask"], changed = _lift_window(kwargs["attention_mask"])
            elif len(args) >= 3 and (args[2] is None or isinstance(args[2], torch.Tensor)):
                args = list(args)
                args[2], changed = _lift_window(args[2])
                args = tuple(args)
            else:
                raise HookError(
                    f"global_attention: layer {layer}'s attention was called without an "
                    f"attention_mask argument; cannot lift its window"
                )
            state["fired"].add(layer)
            if changed:
                state["lifted"].add(layer)
            return args, kwargs

        try:
            for l in chosen:
                attn = model.blocks[l].attn
                handles.append(attn.register_forward_pre_hook(
                    lambda m, a, kw, _l=l: pre_hook(m, a, kw, _l), with_kwargs=True))
            _ACTIVE[key] = state
            yield
        finally:
            for h in handles:
                h.remove()
            _ACTIVE.pop(key, None)

    def hooks(self, model) -> HookList:
        key = id(model)
        label = self.label

        def at_end(t, hook):
            state = _ACTIVE.get(key)
            if state is None:
                raise HookError(
                    f"{label}: its hooks ran without its patch (the mask edit); apply it with "
                    f"`with mitigation.applied(model): ...`"
                )
            missing = sorted(set(state["layers"]) - state["fired"])
            state["fired"].clear()
            if missing:
                raise HookError(
                    f"{label}: the attention of layers {missing} ran without passing through the "
                    f"mask edit; their window was not lifted"
                )
            return None

        return [(final_hook_name(model), at_end)]

    def lifted_layers(self, model) -> list[int]:
        """While applied: the layers whose window was lifted in the last forward."""
        st = _ACTIVE.get(id(model))
        return sorted(st["lifted"]) if st else []

    def active_at(self, model, n_tokens: int) -> bool | None:
        _, w = native_local_layers(model)
        return w is not None and n_tokens > w

    @property
    def label(self) -> str:
        return "global_attention" + ("" if self.layers is None else "@" + _fmt_layers(self.layers))


def sliding_window(window: int = 64, layers=None) -> SlidingWindow:
    """A window-``window`` attention mask patched into the scores of ``layers``
    (default: all) by hooks (App. C.6)."""
    if layers is not None and not isinstance(layers, (int, str)):
        layers = tuple(layers)
    if isinstance(layers, str):
        if layers != "all":
            raise GlassesError(f"sliding_window(layers=...) is a list of layers or 'all', not {layers!r}")
        layers = None
    return SlidingWindow(window, layers)


def global_attention(layers=None) -> GlobalAttention:
    """Lift the native sliding window of ``layers`` (default: every native local layer),
    so native-local and all-global attention can be compared (Gemma 3)."""
    if layers is not None and not isinstance(layers, (int, str)):
        layers = tuple(layers)
    if isinstance(layers, str):
        if layers != "all":
            raise GlassesError(f"global_attention(layers=...) is a list of layers or 'all', not {layers!r}")
        layers = None
    return GlobalAttention(layers)
