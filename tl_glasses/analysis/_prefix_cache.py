"""The shared-prefix key/value cache of a collapse pair: a fast path, verified before use.

The two sequences of a collapse pair share all but their last tokens. The cached path runs
the shared tokens (all but the last shared one) once, keeps their keys and values, and runs
each tail from a copy of that cache. :func:`prefix_cache_supported` checks it once per model,
kernel and regime against two full forwards (``_distance._run_pair`` without the cache);
:func:`applies` says whether a pair can take it at all.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .._core import model_dtype
from ..errors import GlassesError
from ._probe import Capture, LastTokenProbe, run_capture


def applies(model, p: int, hooks, mitigation) -> bool:
    """Whether the cached path can compute this pair: a shared prefix of ≥ 2 tokens,
    no hooks of the user's and no model edits (a hook would see tail-relative
    positions), a TransformerBridge (its forward takes a key/value cache)."""
    from ..compat import is_bridge

    if p < 2 or list(hooks) or not is_bridge(model):
        return False
    return mitigation is None or not getattr(mitigation, "has_model_edits", True)


def _new_cache(model):
    from transformers import DynamicCache

    hf = getattr(model, "original_model", None)
    cfg = getattr(hf, "config", None)
    try:
        return DynamicCache(config=cfg) if cfg is not None else DynamicCache()
    except TypeError:  # older transformers: no per-layer types
        return DynamicCache()


def _copy_cache(cache):
    """A cache that can be extended without touching ``cache`` (each update makes new
    tensors; only the per-layer holders are copied)."""
    import copy

    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    return new


def run_cached_tails(model, ta, tb, probe: LastTokenProbe, ia, ib, k: int, *, attn_impl="auto",
                      mitigation=None) -> tuple[Capture, Capture]:
    """The prefix ``ta[:, :k]`` once with a key/value cache, then ``ta[:, k:]`` and
    ``tb[:, k:]`` each from a copy of it; the captures carry absolute positions."""
    from ..capture import run
    from ..compat import kv_cache_plumbing

    if min(pos for _, pos in ia + ib) < k:
        raise GlassesError(f"the cached pair starts its tails at {k}, after a captured position")
    with kv_cache_plumbing(model):
        cache = _new_cache(model)
        run(model, ta[:, :k], read={}, logits=False, attn_impl=attn_impl, mitigation=mitigation,
            forward_kwargs={"use_cache": True, "past_key_values": cache}, purpose="LastTokenProbe", check=False)
        if cache.get_seq_length() != k:
            raise GlassesError(f"the key/value cache holds {cache.get_seq_length()} positions, not {k}")
        caps = []
        for t, idx in ((ta, ia), (tb, ib)):
            cap = run_capture(model, t[:, k:], probe, [(r, pos - k) for r, pos in idx], mitigation=mitigation,
                              attn_impl=attn_impl, forward_kwargs={"use_cache": True,
                                                                   "past_key_values": _copy_cache(cache)})
            cap.index, cap.path = list(idx), "prefix cache"
            caps.append(cap)
    return caps[0], caps[1]


def _window(model) -> int | None:
    """The model's native sliding-window length, if its config turns one on."""
    hc = getattr(getattr(model, "original_model", None), "config", None)
    hc = getattr(hc, "text_config", None) or hc
    w = getattr(hc, "sliding_window", None)
    if not w or getattr(hc, "use_sliding_window", True) is False:
        return None
    return int(w)


def capture_rel_diff(full: Sequence[Capture], other: Sequence[Capture]) -> float:
    """The largest relative L2 difference between what two computations of the same runs
    captured (``y``, the logits, every ``resid_post``, ``hook_z``)."""
    worst = 0.0
    for f, c in zip(full, other):
        pairs = [(f.y, c.y), (f.logits, c.logits)] + ([(f.resid, c.resid)] if f.resid is not None else [])
        pairs += [(f.z[l], c.z.get(l)) for l in f.z]
        for a, b in pairs:
            if a is None or b is None:
                raise GlassesError("the cached run did not capture what the full run did")
            a, b = a.double(), b.double()
            worst = max(worst, float((b - a).norm() / a.norm().clamp_min(1e-30)))
    return worst


def prefix_cache_supported(model, attn_impl: str = "auto", n_tokens: int = 0) -> bool:
    """Whether the shared-prefix cache reproduces two full forwards on this model.

    Checked once per model, kernel and regime (inside the native sliding window, or
    beyond it for a pair longer than the window) on a pair of random tokens shaped like
    a collapse pair (``v`` + suffix and ``v`` + its last token + suffix): every captured
    quantity (``y``, every ``resid_post``, the last layer's ``hook_z``, the logits) of
    both runs, relative L2 difference ≤ 1e-4 in float32 (0.1 in 16-bit formats, the
    fused-kernel check's tolerances). A failed check falls back to the full forwards with
    a warning (:func:`tl_glasses._fastpath.choose`)."""
    from .._fastpath import NotApplicable, choose
    from ._probe import resolve_attn_impl

    window = _window(model)
    beyond = window is not None and n_tokens > window
    kernel = resolve_attn_impl(model, attn_impl, [])
    regime = f"{kernel}, {'beyond' if beyond else 'within'} window"

    def check():
        vocab = int(getattr(model.cfg, "d_vocab", 0) or 0)
        if vocab < 8:
            raise NotApplicable
        n = (window + 8) if beyond else 24
        g = torch.Generator().manual_seed(0)
        v = torch.randint(4, min(vocab, 1000), (1, n), generator=g)
        suffix = torch.randint(4, min(vocab, 1000), (1, 3), generator=g)
        suffix[0, 0] = (v[0, -1] + 1) % min(vocab, 1000)  # the tails differ at once
        dev = next(model.parameters()).device
        ta = torch.cat([v, suffix], 1).to(dev)
        tb = torch.cat([v, v[:, -1:], suffix], 1).to(dev)
        probe = LastTokenProbe(model)
        from ._distance import _run_pair  # the full forwards: the definition checked against

        full = _run_pair(model, ta, tb, probe, attn_impl=kernel)
        p = full[2]
        cached = run_cached_tails(model, ta, tb, probe, full[0].index, full[1].index, p - 1, attn_impl=kernel)
        worst = capture_rel_diff(full[:2], cached)
        tol = 1e-4 if model_dtype(model) in (torch.float32, torch.float64) else 0.1
        return worst, tol, f"largest relative L2 difference of a captured quantity, {n + 4} tokens"

    return choose(model, "collapse prefix cache", regime, [("prefix cache", check), ("full", None)],
                  reference="two full forwards") == "prefix cache"
