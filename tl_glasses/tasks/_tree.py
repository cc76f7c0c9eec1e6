"""The candidate-tree fast path of :func:`~tl_glasses.tasks.scoring.score_candidates`.

Context and every candidate run in ONE forward: the candidates' prefix tree is appended
to the context, each tree token attending to the context and its own ancestors only (a
4-D attention mask, positions set to the depth in the tree; sliding-window layers get
their own mask). :func:`_tree_mask_kind` says whether a model takes such a mask.

Shared helpers are looked up through :mod:`tl_glasses.tasks.scoring` when called (see
the "Layout" note there); everything here is re-exported by that module.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from .._core import model_device, model_dtype


def _tree_mask_kind(model) -> str | None:
    """'single' (one mask for every layer), 'dict' (full + sliding-window masks, as
    Gemma 3 takes them), or None when a 4-D tree mask cannot be trusted here."""
    from . import scoring as _s  # the shared helpers (and a test's monkeypatches)

    cfg = _s._hf_config(model)
    if cfg is None:
        return None
    impl = getattr(cfg, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        return None
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    if types:
        kinds = set(types)
        if kinds <= {"full_attention"}:
            return "single"
        if kinds <= {"full_attention", "sliding_attention"} and window:
            return "dict"
        return None
    if window or getattr(cfg, "use_sliding_window", False):
        return None  # a window applied some other way: use the cache instead
    return "single"


def _tree(cands: Sequence[Sequence[int]]):
    """Prefix tree of the candidates: node list (prefix tuples, parents first) and index."""
    index: dict[tuple[int, ...], int] = {}
    order: list[tuple[int, ...]] = []
    for c in cands:
        for d in range(1, len(c) + 1):
            p = tuple(int(t) for t in c[:d])
            if p not in index:
                index[p] = len(order)
                order.append(p)
    return order, index


def _tree_masks(L: int, order, index, dtype, device, window: int | None):
    T = len(order)
    pos = torch.cat([torch.arange(L), torch.tensor([L - 1 + len(p) for p in order], dtype=torch.long)])
    allowed = torch.zeros(L + T, L + T, dtype=torch.bool)
    allowed[:L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
    allowed[L:, :L] = True
    for i, p in enumerate(order):
        for d in range(1, len(p) + 1):
            allowed[L + i, L + index[p[:d]]] = True
    neg = torch.finfo(dtype).min
    full = torch.zeros(L + T, L + T, dtype=dtype).masked_fill(~allowed, neg)
    sliding = None
    if window:
        near = (pos[:, None] - pos[None, :]) < int(window)
        sliding = torch.zeros(L + T, L + T, dtype=dtype).masked_fill(~(allowed & near), neg)
    return pos.to(device), full.to(device), (sliding.to(device) if sliding is not None else None)


def _score_tree(model, contexts, candidate_ids, kind, *, terminate, batch_size, max_logits_bytes=512 * 2**20):
    from . import scoring as _s  # the shared helpers (and a test's monkeypatches)

    dev = model_device(model)
    dtype = model_dtype(model)
    window = getattr(_s._hf_config(model), "sliding_window", None) if kind == "dict" else None
    out: list[torch.Tensor | None] = [None] * len(contexts)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (c, cands) in enumerate(zip(contexts, candidate_ids)):
        groups[(int(c.shape[-1]), tuple(tuple(int(t) for t in x) for x in cands))].append(i)
    mask_v = None
    vocab = int(getattr(model.cfg, "d_vocab", 0) or len(model.tokenizer))
    with torch.no_grad():
        for (L, cands), idxs in groups.items():
            order, index = _tree(cands)
            T = len(order)
            pos, full, sliding = _s._tree_masks(L, order, index, dtype, dev, window)
            tree_toks = torch.tensor([p[-1] for p in order], dtype=torch.long, device=dev)
            keep = torch.arange(L - 1, L + T, device=dev)  # kept row 0: after the context; row 1+i: after node i
            # flattened (candidate, kept row, token) triples and the row of each candidate's end
            cj, rows, tks, ends = [], [], [], []
            for j, c in enumerate(cands):
                prev = 0
                for d in range(1, len(c) + 1):
                    cj.append(j)
                    rows.append(prev)
                    tks.append(c[d - 1])
                    prev = 1 + index[c[:d]]
                ends.append(prev)
            cj_t = torch.tensor(cj, device=dev)
            rows_t = torch.tensor(rows, device=dev)
            tks_t = torch.tensor(tks, device=dev)
            ends_t = torch.tensor(ends, device=dev)
            per_row = (T + 1) * max(vocab, 1) * 4
            step = max(1, min(int(batch_size), max_logits_bytes // per_row))
            for s in range(0, len(idxs), step):
                chunk = idxs[s: s + step]
                B = len(chunk)
                toks = torch.cat([torch.stack([contexts[i].reshape(-1) for i in chunk]).to(dev),
                                  tree_toks.expand(B, -1)], dim=1)
                m4 = full.expand(B, 1, -1, -1)
                am = {"full_attention": m4, "sliding_attention": sliding.expand(B, 1, -1, -1)} \
                    if kind == "dict" else m4
                logits = _s._logits(model, toks, keep, attention_mask=am, position_ids=pos.expand(B, -1))
                if terminate and mask_v is None:
                    mask_v = _s.digit_continuation_mask(model.tokenizer, logits.shape[-1]).to(dev)
                for r, i in enumerate(chunk):
                    lg = logits[r].float()  # [T+1, V]
                    lse = torch.logsumexp(lg, -1).double()
                    lp = lg[rows_t, tks_t].double() - lse[rows_t]
                    sc = torch.zeros(len(cands), dtype=torch.float64, device=dev).index_add_(0, cj_t, lp)
                    if terminate:
                        e = lg[ends_t]
                        sc += torch.logsumexp(e.masked_fill(mask_v, float("-inf")), -1).double() - lse[ends_t]
                    out[i] = sc.cpu()
                del logits
    return out  # type: ignore[return-value]
