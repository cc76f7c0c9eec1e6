"""Last-position probes: capture a few positions of a few hooks, inside the hooks.

:class:`LastTokenProbe` never caches the whole model: each hook copies out the rows
it needs (by default only the last position) and lets the full activation go. It
captures the final normalised representation ``y`` (``ln_final.hook_out``, learned
scale included), every layer's ``resid_post`` and each head's ``hook_z`` at the last
layer (or at all layers). It can also read the same quantities from an existing
``ActivationCache``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float

from .._core import FINAL, check_hooks, hook_snapshot, n_heads, n_layers, require_eval
from ..errors import GlassesError, HookError
from ._fused import fused_supported, needs_eager

__all__ = ["LastTokenProbe", "Capture", "run_capture", "resolve_attn_impl", "is_rotary"]

Index = list[tuple[int, int]]  # (batch row, position) pairs


@dataclass
class Capture:
    """What a probe captured: one row per requested (batch row, position).

    ``y`` ``[k, d_model]``; ``resid`` ``[k, n_layers, d_model]`` or None; ``z`` maps a
    layer to ``[k, n_heads, d_head]``; ``logits`` ``[V]`` at the last position of row
    0 when asked for; ``attn_impl`` the attention kernel used; ``path`` ``"full"`` (one forward
    of the whole input) or ``"prefix cache"`` (the tail after a shared prefix's cache).
    """

    index: Index
    y: Float[torch.Tensor, "k d_model"]
    resid: Float[torch.Tensor, "k layer d_model"] | None = None
    z: dict[int, Float[torch.Tensor, "k head d_head"]] = field(default_factory=dict)
    logits: Float[torch.Tensor, "vocab"] | None = None
    attn_impl: str = "eager"
    path: str = "full"  # "prefix cache": computed from a shared prefix's key/value cache

    def row(self, i: int) -> "Capture":
        """The capture restricted to row ``i`` of the index (keeps a leading dim of 1)."""
        return Capture(
            [self.index[i]], self.y[i : i + 1],
            None if self.resid is None else self.resid[i : i + 1],
            {l: z[i : i + 1] for l, z in self.z.items()}, self.logits, self.attn_impl, self.path,
        )

    def to(self, dtype: torch.dtype) -> "Capture":
        """Every captured tensor rounded to ``dtype`` (the "round fp32 to D" estimate)."""
        return Capture(
            list(self.index), self.y.to(dtype),
            None if self.resid is None else self.resid.to(dtype),
            {l: z.to(dtype) for l, z in self.z.items()},
            None if self.logits is None else self.logits.to(dtype), self.attn_impl, self.path,
        )

    def finite(self) -> bool:
        ts = [self.y] + ([self.resid] if self.resid is not None else []) + list(self.z.values())
        return all(bool(torch.isfinite(t).all()) for t in ts)


class LastTokenProbe:
    """Hooks that capture the last position (or chosen positions) of ``y``, each
    layer's ``resid_post`` and per-head ``hook_z``.

    ``layers``: capture ``resid_post`` of every layer (True) or not (False).
    ``heads``: ``"last"`` (hook_z of the last layer), ``"all"`` (every layer), or False.
    """

    def __init__(self, model, *, layers: bool = True, heads: str | bool = "last"):
        if heads not in ("last", "all", False, None):
            raise GlassesError(f"heads must be 'last', 'all' or False, not {heads!r}")
        self.model = model
        self.L = n_layers(model)
        self.H = n_heads(model)
        self.layers = bool(layers)
        self.z_layers = [] if not heads else ([self.L - 1] if heads == "last" else list(range(self.L)))
        self.names = [FINAL]
        if self.layers:
            self.names += [f"blocks.{l}.hook_resid_post" for l in range(self.L)]
        self.names += [f"blocks.{l}.attn.hook_z" for l in self.z_layers]
        check_hooks(model, self.names, purpose="LastTokenProbe")
        self._store: dict[str, torch.Tensor] = {}
        self._index: Index = []

    # -- hooks --------------------------------------------------------------------
    def hooks(self, index: Index | None = None) -> list[tuple[str, Callable]]:
        """Forward hooks capturing ``index`` (default: the last position of row 0)."""
        self._store = {}
        self._index = list(index) if index is not None else [(0, -1)]
        rows = torch.tensor([r for r, _ in self._index])
        pos = torch.tensor([p for _, p in self._index])

        store = self._store

        def make(name: str):
            def grab(t: torch.Tensor, hook):
                store[name] = t[rows.to(t.device), pos.to(t.device)].detach().clone()
                return None

            return grab

        return [(n, make(n)) for n in self.names]

    def capture(self) -> Capture:
        """The tensors captured by the last run (raises if a hook did not fire)."""
        missing = [n for n in self.names if n not in self._store]
        if missing:
            raise HookError(
                f"LastTokenProbe: hooks {missing[:3]}{'…' if len(missing) > 3 else ''} did not fire; "
                f"the model's forward does not pass through them"
            )
        s = self._store
        y = s[FINAL]
        resid = None
        if self.layers:
            resid = torch.stack([s[f"blocks.{l}.hook_resid_post"] for l in range(self.L)], dim=1)
        z = {l: self._heads(s[f"blocks.{l}.attn.hook_z"]) for l in self.z_layers}
        return Capture(list(self._index), y, resid, z)

    def _heads(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:  # [k, n_heads * d_head]
            z = z.reshape(z.shape[0], self.H, -1)
        return z

    # -- from an existing cache -------------------------------------------------------
    def from_cache(self, cache: Any, index: Index | None = None) -> Capture:
        """The same capture read from an ``ActivationCache`` (or a dict of full
        ``[batch, pos, ...]`` activations) that holds the probe's hook names."""
        index = list(index) if index is not None else [(0, -1)]
        rows = torch.tensor([r for r, _ in index])
        pos = torch.tensor([p for _, p in index])
        got = {}
        for n in self.names:
            try:
                t = cache[n]
            except KeyError:
                raise GlassesError(
                    f"the cache has no {n!r}; run_with_cache(names_filter=...) must include "
                    f"{self.names[:2]}…{self.names[-1:]}"
                ) from None
            got[n] = t[rows.to(t.device), pos.to(t.device)].detach().clone()
        self._store, self._index = got, index
        return self.capture()


def resolve_attn_impl(model, attn_impl: str, hook_names: Sequence[Any], *, eager_needed: bool = False) -> str:
    """``"eager"`` or ``"sdpa"`` for a run with these hooks and those the user has
    already attached to the model (``model.add_hook``): a user's hook on an attention
    pattern keeps the run on the eager path, where it fires."""
    if attn_impl not in ("auto", "eager", "sdpa"):
        raise GlassesError(f"attn_impl must be 'auto', 'eager' or 'sdpa', not {attn_impl!r}")
    if attn_impl == "eager":
        return "eager"
    must_eager = eager_needed or needs_eager(list(hook_names) + list(hook_snapshot(model)))
    if attn_impl == "sdpa":
        if must_eager:
            raise GlassesError(
                "attn_impl='sdpa' cannot run hooks on attention scores/patterns (or the attention "
                "module's own hooks); use attn_impl='auto' or 'eager'"
            )
        if not fused_supported(model):
            raise GlassesError("the fused (sdpa) attention path does not reproduce eager on this model")
        return "sdpa"
    return "eager" if must_eager or not fused_supported(model) else "sdpa"


def is_rotary(model) -> bool:
    """Whether positions enter only through rotary (relative) encodings, so running a
    sequence at positions shifted by one changes nothing in exact arithmetic."""
    from ..compat import forward_accepts

    # The shifted run needs ``position_ids``; a HookedTransformer (TL 3.x) takes none,
    # so the shift floor is skipped there rather than crashing.
    return getattr(model.cfg, "positional_embedding_type", None) == "rotary" and forward_accepts(
        model, "position_ids"
    )


def _supports_logits_to_keep(model) -> bool:
    from ..capture import backend_for

    return backend_for(model).supports_logits_to_keep(model)


def run_capture(
    model,
    tokens: torch.Tensor,
    probe: LastTokenProbe,
    index: Index,
    *,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
    mitigation=None,
    attn_impl: str = "auto",
    logits: bool = True,
    position_ids: torch.Tensor | None = None,
    forward_kwargs: dict | None = None,
) -> Capture:
    """One forward of ``tokens`` (``[batch, pos]``) through the capture engine with the
    probe's reads, the mitigation's edits and the user's hooks; logits only at the last
    position of row 0. ``position_ids`` (rotary models) runs the tokens at other
    absolute positions; ``forward_kwargs`` go to the model's forward (e.g. a key/value
    cache: the index then counts positions within ``tokens``). The probe reads each hook after the mitigation's and the user's
    hooks at that hook point have run (it sees their edits)."""
    from ..capture import Read, run

    require_eval(model)
    index = list(index) if index is not None else [(0, -1)]
    at = Read(at=index)
    out = run(model, tokens, read={n: at for n in probe.names}, write=list(fwd_hooks), mitigation=mitigation,
              logits=1 if logits else False, attn_impl=attn_impl, position_ids=position_ids,
              forward_kwargs=forward_kwargs, purpose="LastTokenProbe", check=False)
    probe._store, probe._index = dict(out.acts), index
    cap = probe.capture()
    cap.logits = None if out.logits is None else out.logits[0, -1].detach().clone()
    cap.attn_impl = out.attn_impl
    return cap
