"""The key/value-cache path of :func:`~tl_glasses.tasks.scoring.score_candidates`
(and the plain recompute, the same loop without a cache).

The context is run once, with the key/value cache; candidates of the same token length
are then run together from copies of that cache (no padding anywhere). Where a model
offers no cache each candidate batch recomputes context + candidate instead.

Shared helpers are looked up through :mod:`tl_glasses.tasks.scoring` when called (see
the "Layout" note there); everything here is re-exported by that module.
"""
from __future__ import annotations

import copy
import weakref
from collections import defaultdict

import torch

from .._core import model_device
from ..capture import forward
from ..compat import kv_cache_plumbing
from ..errors import GlassesError


def _cache_rows(cache, rows: torch.Tensor):
    """A new cache holding ``rows`` of ``cache`` (the original is left untouched)."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_select_indices(rows)
    return new


def _cache_nbytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _forward_with_cache(model, tokens: torch.Tensor):
    """``(logits, cache)`` from one forward, or ``(logits, None)`` if the model gives none."""
    from . import scoring as _s  # the shared helpers (and a test's monkeypatches)

    try:
        out = forward(model, tokens, 1, fallback=False, return_type="logits_and_cache", use_cache=True)
    except (TypeError, ValueError, NotImplementedError):
        return _s._logits(model, tokens, 1), None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        logits, cache = out
        if cache is not None and hasattr(cache, "layers") and hasattr(cache, "batch_select_indices"):
            return logits, cache
        return logits, None
    return out, None


_HAS_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _offers_cache(model) -> bool:
    """Whether a forward with ``return_type='logits_and_cache'`` gives a usable cache."""
    from . import scoring as _s  # the shared helpers (and a test's monkeypatches)

    try:
        known = _HAS_CACHE.get(model)
    except TypeError:
        known = None
    if known is not None:
        return known
    toks = torch.tensor([[0, 1]], dtype=torch.long, device=model_device(model))
    try:
        with torch.no_grad(), kv_cache_plumbing(model):
            ok = _s._forward_with_cache(model, toks)[1] is not None
    except Exception:  # noqa: BLE001 - no cache, then
        ok = False
    try:
        _HAS_CACHE[model] = ok
    except TypeError:
        pass
    return ok


def _score_cached(model, contexts, candidate_ids, *, terminate, batch_size, use_cache, require_cache,
                  max_cache_bytes):
    from . import scoring as _s  # the shared helpers (and a test's monkeypatches)

    dev = model_device(model)
    mask = None
    out: list[torch.Tensor | None] = [None] * len(contexts)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(contexts):
        by_len[int(c.shape[-1])].append(i)
    with torch.no_grad(), kv_cache_plumbing(model):
        for _, idxs in sorted(by_len.items()):
            for s in range(0, len(idxs), max(1, batch_size)):
                chunk = idxs[s: s + max(1, batch_size)]
                toks = torch.stack([contexts[i].reshape(-1) for i in chunk]).to(dev)
                if not use_cache:
                    logits, cache = _s._logits(model, toks, 1), None
                else:
                    logits, cache = _s._forward_with_cache(model, toks)
                    if cache is None and require_cache:
                        raise GlassesError("method='cache', but this model returned no key/value cache")
                last = logits[:, -1].float()
                if terminate and mask is None:
                    mask = _s.digit_continuation_mask(model.tokenizer, last.shape[-1]).to(dev)
                for r, i in enumerate(chunk):
                    out[i] = _score_one(model, toks[r], last[r], cache, r, candidate_ids[i], mask,
                                        batch_size=batch_size, max_cache_bytes=max_cache_bytes)
                del cache
    return out  # type: ignore[return-value]


def _score_one(model, ctx, last_logits, cache, row, cands, mask, *, batch_size, max_cache_bytes):
    from . import scoring as _s  # the shared helpers (and a test's monkeypatches)

    dev = ctx.device
    first = torch.log_softmax(last_logits.double(), -1)
    scores = torch.empty(len(cands), dtype=torch.float64)
    groups: dict[int, list[int]] = defaultdict(list)
    for j, c in enumerate(cands):
        if not len(c):
            raise GlassesError("a candidate has no tokens")
        groups[len(c)].append(j)
    per_row = None
    if cache is not None:
        per_row = max(1, _cache_nbytes(cache) // max(1, _batch_of(cache)))
    for k, js in sorted(groups.items()):
        if cache is not None:
            size = max(1, min(64, max_cache_bytes // per_row))
        else:
            size = max(1, batch_size)
        for s in range(0, len(js), size):
            sub = js[s: s + size]
            ct = torch.tensor([list(cands[j]) for j in sub], dtype=torch.long, device=dev)  # [C, k]
            lp = first[ct[:, 0]].clone()
            need_logits = k > 1 or mask is not None
            if need_logits:
                if cache is not None:
                    rows = torch.full((len(sub),), row, dtype=torch.long, device=dev)
                    logits = forward(model, ct, past_key_values=_s._cache_rows(cache, rows), return_type="logits")
                else:
                    full = torch.cat([ctx.expand(len(sub), -1), ct], dim=1)
                    logits = _s._logits(model, full, k)
                logits = logits.double()
                if k > 1:
                    lsm = torch.log_softmax(logits[:, :-1], -1)
                    lp += lsm.gather(-1, ct[:, 1:, None])[..., 0].sum(-1)
                if mask is not None:
                    lp += _s._end_logprob(logits[:, -1], mask)
            scores[sub] = lp.cpu()
    return scores


def _batch_of(cache) -> int:
    for layer in getattr(cache, "layers", []):
        t = getattr(layer, "keys", None)
        if isinstance(t, torch.Tensor) and t.ndim >= 1:
            return int(t.shape[0])
    return 1
