"""The paper's theory (App. B), checked numerically on the synthetic lab.

Each function measures one statement and returns a tidy :class:`~tl_glasses.results.Result`
with ``.df``, ``.summary()``, ``.plot()`` and ``.save()``:

==========================  ===========================================================
``softmax_weight_decay``    Lemma B.1: a fixed entry's softmax weight falls as entries
                            are appended, below any p for large n
``softmax_tv_decay``        Lemma B.2 / Fig. 9: TV between softmax(x) and softmax(x*) for
                            a fixed number of perturbed entries decays with n;
                            Prop. B.4: with a constant fraction perturbed it does not
``collapse_by_pe``          Thm B.3 / Figs. 8, 10: distance between the final-token
                            representations of v and its last-token-repeated twin, per PE
``counting_ratio``          Prop. B.9: no PE and no causal mask: "10" and "1100" get the
                            same representations
``counting_precision``      Cor. B.10: from which n are 1^n and 1^(n+1) bitwise equal,
                            per dtype and PE
``depth_limit``             Props. 5.2/B.8, Lemmas B.6/B.7: products of causal attention
                            matrices approach the first-column limit with depth
==========================  ===========================================================

The formulas of the paper were lost in the text we have; ``docs/theory.md`` states the
reading used for each statement. ``run_check(name, quick=...)`` runs one by name (the
names of :data:`CHECKS`), as ``tl-glasses theory`` does.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .._core import FINAL, hooks_context
from ..errors import GlassesError, UnknownNameError
from ._figures import (
    CollapseByPEResult,
    CountingPrecisionResult,
    CountingRatioResult,
    DepthLimitResult,
    SoftmaxDecayResult,
    TotalVariationResult,
    loglog_slope,
)
from ._catalog import CATALOG
from ._model import BOS_ID, CHAR_VOCAB, SyntheticDecoder
from ._pe import PE_NAMES

__all__ = [
    "CHECKS",
    "run_check",
    "softmax_weight_decay",
    "softmax_tv_decay",
    "collapse_by_pe",
    "counting_ratio",
    "counting_precision",
    "depth_limit",
    "random_causal_attention",
    "is_row_stochastic",
    "first_column_limit",
    "attention_product",
    "tv_distance",
    "fraction_tv_closed_form",
    "loglog_slope",
    "SoftmaxDecayResult",
    "TotalVariationResult",
    "CollapseByPEResult",
    "CountingRatioResult",
    "CountingPrecisionResult",
    "DepthLimitResult",
]

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(d: torch.dtype | str) -> torch.dtype:
    if isinstance(d, torch.dtype):
        return d
    key = str(d).replace("torch.", "")
    key = {"fp32": "float32", "fp64": "float64", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(key, key)
    if key not in _DTYPES:
        raise UnknownNameError("dtype", d, list(_DTYPES))
    return _DTYPES[key]


def _dname(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def _pow2(lo: int, hi: int) -> list[int]:
    return [2**k for k in range(lo, hi + 1)]


def _run_rows(store_dir, config: dict, key: Sequence[str], items: list[dict], compute) -> pd.DataFrame:
    """One row per item (``{**item, **compute(item)}``); with ``store_dir`` each row is
    appended to disk as it is produced (``RowStore``: a rerun resumes where a killed
    one stopped, and refuses a directory written by another configuration)."""
    if store_dir is None:
        return pd.DataFrame([{**it, **compute(it)} for it in items])
    from ..sweeps import RowStore

    store = RowStore(store_dir, config, key=key)
    df = store.run(items, compute, desc=config.get("check", ""), progress=sys.stderr.isatty())
    wanted = {tuple(str(it[k]) for k in key) for it in items}
    return df[[tuple(str(v) for v in r) in wanted for r in df[list(key)].itertuples(index=False)]].reset_index(drop=True)


class _Memo(dict):
    """Build-once values keyed by a tuple (models and sequences shared by many rows);
    keeps the ``size`` most recent."""

    def __init__(self, size: int | None = None):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key not in self:
            if self.size is not None and len(self) >= self.size:
                del self[next(iter(self))]
            self[key] = make()
        return self[key]


# ---------------------------------------------------------------------------------------
# scalar softmax results
# ---------------------------------------------------------------------------------------
def tv_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Total variation ``0.5 * sum |p - q|`` over the last axis (the paper's "TV" drops
    the 1/2: it is our ``2 * tv_distance``)."""
    return 0.5 * (p - q).abs().sum(-1)


def fraction_tv_closed_form(s: torch.Tensor | float, delta: float) -> torch.Tensor | float:
    """TV between ``softmax(x)`` and ``softmax(x + delta * 1_K)`` as a function of the
    mass ``s = softmax(x)(K)`` of the shifted set alone: ``s(1-s)(e^d - 1)/(1 - s + s e^d)``.

    Outside ``K`` the ratio ``p*_i/p_i`` is the constant ``Z/Z*``; inside it is
    ``e^d Z/Z*`` with ``Z*/Z = 1 - s + s e^d``; summing ``|p_i - p*_i|`` over both sets
    gives the formula. For ``s = 1/2`` it is ``tanh(d/2)/2``, for every n: the TV of
    Prop. B.4 does not decay."""
    e = math.exp(delta)
    return s * (1 - s) * (e - 1) / (1 - s + s * e)


def softmax_weight_decay(
    lengths: Sequence[int] | None = None,
    *,
    trials: int = 32,
    bound: float = 2.0,
    p: float = 0.01,
    seed: int = 0,
) -> SoftmaxDecayResult:
    """Lemma B.1. Entries are i.i.d. uniform on ``[-bound, bound]``; the fixed entry
    ``c`` is the first, and entries are appended one at a time up to ``max(lengths)``.

    Checks (in ``meta``): the weight ``e^c / sum_j e^{x_j}`` falls strictly at *every*
    append (float64), stays below ``e^{2M}/n``, and drops below ``p`` no later than
    ``n = e^{2M}/p``. ``df`` holds the weights at ``lengths``."""
    lengths = sorted(set(lengths or _pow2(1, 16)))
    N = max(lengths)
    if lengths[0] < 1:
        raise GlassesError("lengths must be positive")
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(trials, N, generator=g, dtype=torch.float64) * 2 - 1) * bound
    e = x.exp()
    w = e[:, :1] / e.cumsum(1)  # weight of entry 0 among the first n entries, n = 1..N
    steps = w[:, 1:] - w[:, :-1]
    strictly = bool((steps < 0).all())
    b = math.exp(2 * bound) / torch.arange(1, N + 1, dtype=torch.float64)
    below = (w < p)
    # first n from which the weight stays below p (it is monotone, so the first crossing)
    n_below = torch.where(below.any(1), below.float().argmax(1) + 1, torch.full((trials,), N + 1))
    idx = torch.tensor(lengths) - 1
    rows = [
        {"trial": t, "n": int(n), "weight": float(w[t, n - 1]), "bound": float(b[n - 1])}
        for t in range(trials) for n in lengths
    ]
    meta = {
        "check": "softmax-decay", "claim": "Lemma B.1", "model": "softmax", "trials": trials, "bound_M": bound,
        "p": p, "seed": seed, "strictly_decreasing": strictly, "n_appends": N - 1,
        "max_weight_over_bound": float((w / b).max()), "n_below_p_max": int(n_below.max()),
        "n_guaranteed": int(math.ceil(math.exp(2 * bound) / p)),
        "largest_step": float(steps.max()), "weight_at_max_n_max": float(w[:, idx[-1]].max()),
    }
    return SoftmaxDecayResult(df=pd.DataFrame(rows), meta=meta)


def softmax_tv_decay(
    lengths: Sequence[int] | None = None,
    *,
    k: int = 10,
    trials: int = 16,
    low: float = 0.0,
    high: float = 1.0,
    noise: float = 1.0,
    delta: float = 1.0,
    seed: int = 0,
) -> TotalVariationResult:
    """Lemma B.2 (Fig. 9) and Prop. B.4 (App. C.3's set-up).

    ``x`` is uniform on ``[low, high]^n`` (prefixes of one long draw per trial, so the
    sequence grows). Lemma B.2: ``x*`` adds uniform noise on ``[-noise, noise]`` to the
    first ``k`` entries; its TV is bounded by ``max(p(K), p*(K)) <= k e^{2M}/n`` (proof in
    ``docs/theory.md``) and decays like ``1/n``. Prop. B.4: ``x*`` adds ``delta`` to every
    other entry (a constant fraction); its TV equals
    :func:`fraction_tv_closed_form` and tends to ``tanh(delta/2)/2``, not 0."""
    lengths = sorted(set(lengths or _pow2(4, 16)))
    if lengths[0] <= k:
        raise GlassesError(f"every length must exceed k={k}")
    N = max(lengths)
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(trials, N, generator=g, dtype=torch.float64)
    pert = torch.zeros(trials, N, dtype=torch.float64)
    pert[:, :k] = (torch.rand(trials, k, generator=g, dtype=torch.float64) * 2 - 1) * noise
    mask = torch.zeros(N, dtype=torch.bool)
    mask[0::2] = True
    rows = []
    max_err = 0.0
    for n in lengths:
        p = torch.softmax(x[:, :n], -1)
        ps = torch.softmax(x[:, :n] + pert[:, :n], -1)
        tv = tv_distance(p, ps)
        bnd = torch.maximum(p[:, :k].sum(-1), ps[:, :k].sum(-1))
        pf = torch.softmax(x[:, :n] + delta * mask[:n].double(), -1)
        tvf = tv_distance(p, pf)
        s = p[:, mask[:n]].sum(-1)
        closed = fraction_tv_closed_form(s, delta)
        max_err = max(max_err, float((tvf - closed).abs().max()))
        for t in range(trials):
            rows.append({"kind": "fixed k", "trial": t, "n": n, "tv": float(tv[t]), "l1": 2 * float(tv[t]),
                         "bound": float(bnd[t])})
            rows.append({"kind": "fraction", "trial": t, "n": n, "tv": float(tvf[t]), "l1": 2 * float(tvf[t]),
                         "bound": float(closed[t])})
    df = pd.DataFrame(rows)
    fk = df[df.kind == "fixed k"].groupby("n")["tv"].mean()
    fr = df[df.kind == "fraction"]
    n_lo = 64 if 64 in fk.index else int(fk.index[0])
    n_hi = 4096 if 4096 in fk.index else int(fk.index[-1])
    meta = {
        "check": "tv-decay", "claim": "Lemma B.2 (Fig. 9), Prop. B.4", "model": "softmax", "k": k,
        "trials": trials, "low": low, "high": high, "noise": noise, "delta": delta, "seed": seed,
        "slope_fixed_k": loglog_slope(fk.index.values, fk.values), "n_lo": n_lo, "n_hi": n_hi,
        "ratio_fixed_k": float(fk[n_lo] / fk[n_hi]),
        "bound_holds": bool((df[df.kind == "fixed k"].eval("tv <= bound * (1 + 1e-12)")).all()),
        "min_tv_fraction": float(fr.tv.min()), "max_tv_fraction": float(fr.tv.max()),
        "limit_fraction": math.tanh(delta / 2) / 2, "max_closed_form_error": max_err,
    }
    return TotalVariationResult(df=df, meta=meta)


# ---------------------------------------------------------------------------------------
# representational collapse on the synthetic decoder (Thm B.3)
# ---------------------------------------------------------------------------------------
def _last_token(model: SyntheticDecoder, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y_last, logits_last, pattern_last_row_head_mean)`` of one sequence, from the
    fast path (``last_query_only``)."""
    store: dict[str, torch.Tensor] = {}
    last = f"blocks.{model.cfg.n_layers - 1}.attn.hook_pattern"

    def keep_y(t, hook):
        store["y"] = t[0, -1].detach().clone()

    def keep_p(t, hook):
        store["p"] = t[0, :, -1].detach().float().mean(0)

    with torch.no_grad(), hooks_context(model, [(FINAL, keep_y), (last, keep_p)]):
        logits = model(tokens, last_query_only=True)
    return store["y"], logits[0, -1].detach(), store["p"]


def collapse_by_pe(
    pes: Sequence[str] = PE_NAMES,
    lengths: Sequence[int] | None = None,
    *,
    trials: int = 8,
    qkv: str = "sampled",
    init_std: float | None = 1.0,
    d_model: int = 64,
    n_heads: int = 1,
    n_layers: int = 1,
    d_mlp: int | None = None,
    causal: bool = True,
    sequence: str = "random",
    d_vocab: int = 1024,
    dtype: torch.dtype | str = torch.float64,
    seed: int = 0,
    figure: str = "Fig. 10",
    store_dir: str | os.PathLike | None = None,
) -> CollapseByPEResult:
    """Thm B.3. For each PE and trial (model seed ``seed + t``, its own random token
    sequence ``v``), the distance ``||y_n(v) - y_{n+1}(v*)||`` with ``v*`` = ``v`` plus its
    last token repeated, ``y`` the final-norm output of the last token.

    Defaults are App. C.4's set-up (Fig. 10): one layer, one head, d=64, q/k/v sampled
    from standard Gaussians, one row per token id (``d_vocab`` ids, so tokens are nearly
    all distinct); float64 so that the trend is not hidden by rounding. Fig. 8 is
    ``pes=("sinusoidal",), init_std=1/sqrt(d)``. ``sequence="ones"`` compares
    ``<bos> 1^n`` with ``<bos> 1^(n+1)`` instead."""
    for pe in pes:
        if pe not in PE_NAMES:
            raise UnknownNameError("positional encoding", pe, PE_NAMES)
    if sequence not in ("random", "ones"):
        raise UnknownNameError("sequence", sequence, ["random", "ones"])
    lengths = sorted(set(lengths or _pow2(4, 14)))
    dt = _dtype(dtype)
    N = max(lengths)
    d_head = d_model // n_heads
    std = 1.0 / math.sqrt(d_head) if init_std is None else float(init_std)
    config = {  # what changes the numbers of a row (pe, trial and n are the row keys)
        "check": "collapse-pe", "qkv": qkv, "init_std": std,
        "d_model": d_model, "n_heads": n_heads, "n_layers": n_layers, "d_mlp": d_mlp, "causal": causal,
        "sequence": sequence, "d_vocab": d_vocab, "dtype": _dname(dt), "seed": seed,
    }

    memo = _Memo(size=1)

    def setup(pe, t):
        model = SyntheticDecoder(pe, causal, qkv=qkv, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                 d_mlp=d_mlp, init_std=std, d_vocab=d_vocab, n_ctx=N + 1, dtype=dt,
                                 seed=seed + t)
        g = torch.Generator().manual_seed(10_000 + seed + t)
        if sequence == "random":
            base = torch.randint(4, d_vocab, (N,), generator=g)
        else:
            base = torch.full((N,), CHAR_VOCAB.index("1"))
            base[0] = BOS_ID
        return model, base

    def compute(item):
        model, base = memo.get_or((item["pe"], item["trial"]), lambda: setup(item["pe"], item["trial"]))
        n = item["n"]
        v = base[:n][None]
        vs = torch.cat([v, v[:, -1:]], dim=1)
        y, _, _ = _last_token(model, v)
        ys, _, ps = _last_token(model, vs)
        diff = y.double() - ys.double()
        return {"l2": float(diff.norm()), "linf": float(diff.abs().max()),
                "rel": float(diff.norm() / y.double().norm()), "new_weight": float(ps[-1])}

    items = [{"pe": pe, "qkv": qkv, "trial": t, "n": n} for pe in pes for t in range(trials) for n in lengths]
    df = _run_rows(store_dir, config, ["pe", "qkv", "trial", "n"], items, compute)
    res = CollapseByPEResult(df=df, meta={**config, "lengths": lengths, "trials": trials, "figure": figure,
                                          "model": "SyntheticDecoder"})
    res.meta["slopes"] = res.slopes()
    return res


# ---------------------------------------------------------------------------------------
# counting (Prop. B.9, Cor. B.10)
# ---------------------------------------------------------------------------------------
DEFAULT_RATIO_PAIRS: tuple[tuple[str, str], ...] = (
    ("10", "1100"), ("10", "1010"), ("10", "11110000"), ("10", "0101"), ("110", "111100"), ("10", "111000"),
    ("10", "110"), ("10", "1000"), ("110", "1110"),
)


def _same_ratio(a: str, b: str) -> bool:
    sa, sb = set(a), set(b)
    return sa == sb and all(a.count(c) * len(b) == b.count(c) * len(a) for c in sa)


def counting_ratio(
    pairs: Sequence[tuple[str, str]] = DEFAULT_RATIO_PAIRS,
    *,
    pes: Sequence[str] = PE_NAMES,
    causal: Sequence[bool] = (False, True),
    dtypes: Sequence[torch.dtype | str] = (torch.float64, torch.float32, torch.bfloat16),
    n_layers: int = 2,
    qkv: str = "computed",
    d_model: int = 64,
    n_heads: int = 4,
    seed: int = 0,
) -> CountingRatioResult:
    """Prop. B.9. For each pair ``(short, long)`` of strings, compare the final
    representation (``ln_final.hook_out``) of every position of ``long`` with that of a
    position holding the same character in ``short``. With no PE and no causal mask,
    pairs with the same character ratio agree up to the dtype's rounding (float
    additions are not associative, so "exact" means: bitwise where the arithmetic is
    exact, within a few eps otherwise); pairs with another ratio, a causal mask (2+
    layers) or a PE differ at O(1)."""
    rows = []
    for pe in pes:
        for c in causal:
            for dtype in dtypes:
                dt = _dtype(dtype)
                model = SyntheticDecoder(pe, c, qkv=qkv, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                         dtype=dt, seed=seed)
                eps = torch.finfo(dt).eps
                for short, long in pairs:
                    with torch.no_grad():
                        _, cs = model.run_with_cache(model.to_tokens(short), names_filter=FINAL, return_type=None,
                                                     return_cache_object=False)
                        _, cl = model.run_with_cache(model.to_tokens(long), names_filter=FINAL, return_type=None,
                                                     return_cache_object=False)
                    ys, yl = cs[FINAL][0], cl[FINAL][0]
                    ref = torch.stack([ys[short.index(ch)] for ch in long])
                    diff = (yl.double() - ref.double()).abs().max().item()
                    scale = max(yl.double().abs().max().item(), 1e-30)
                    rows.append({
                        "pe": pe, "causal": bool(c), "dtype": _dname(dt), "short": short, "long": long,
                        "same_ratio": _same_ratio(short, long), "bitwise": bool(torch.equal(yl, ref)),
                        "max_abs": diff, "rel": diff / scale, "ulps": diff / scale / eps,
                    })
    meta = {"check": "counting-ratio", "claim": "Prop. B.9", "model": "SyntheticDecoder", "n_layers": n_layers,
            "qkv": qkv, "d_model": d_model, "n_heads": n_heads, "seed": seed}
    return CountingRatioResult(df=pd.DataFrame(rows), meta=meta)


def _geometric_lengths(lo: int, hi: int, per_octave: int) -> list[int]:
    k = np.arange(0, int(math.ceil(per_octave * math.log2(hi / lo))) + 1)
    return sorted({int(round(lo * 2 ** (i / per_octave))) for i in k if lo * 2 ** (i / per_octave) <= hi * 1.0001})


def counting_precision(
    pes: Sequence[str] = PE_NAMES,
    dtypes: Sequence[torch.dtype | str] = (torch.float32, torch.bfloat16, torch.float16),
    lengths: Sequence[int] | None = None,
    *,
    qkv: str | Sequence[str] = "computed",
    token: str = "1",
    prefix: Sequence[int] = (BOS_ID,),
    n_layers: int = 1,
    d_model: int = 64,
    n_heads: int = 4,
    init_std: float | None = None,
    seed: int = 0,
    store_dir: str | os.PathLike | None = None,
) -> CountingPrecisionResult:
    """Cor. B.10. ``prefix + token^n`` against ``prefix + token^(n+1)``: for each dtype
    (the same seeded weights, cast), PE and ``n``, are the last token's final
    representations bitwise equal, and do the next-token argmaxes agree? The collapse
    length (``.collapse_lengths()``) is the smallest tested n from which every longer
    tested pair is bitwise equal. ``ref_rel`` is the float64 relative distance, for
    comparison with the dtype's resolution (fp32 2^-23, fp16 2^-10, bf16 2^-7).

    The prefix (default ``<bos>``) matters: without it, and with no absolute PE in the
    residual stream, every position of ``1^n`` holds the same vector and ``1^n``,
    ``1^(n+1)`` are identical for every n (Prop. B.9's ratio argument)."""
    lengths = sorted(set(lengths or _geometric_lengths(1, 16384, 4)))
    qkvs = [qkv] if isinstance(qkv, str) else list(qkv)
    dts = [_dtype(d) for d in dtypes]
    tok = CHAR_VOCAB.index(token)
    N = max(lengths) + 1 + len(prefix)
    config = {"check": "counting-precision", "token": token, "prefix": list(prefix), "n_layers": n_layers,
              "d_model": d_model, "n_heads": n_heads, "init_std": init_std, "seed": seed}

    def seq(n):
        return torch.tensor([list(prefix) + [tok] * n])

    memo = _Memo()

    def model(pe, q, d):
        return memo.get_or((pe, q, d), lambda: SyntheticDecoder(
            pe, True, qkv=q, n_layers=n_layers, d_model=d_model, n_heads=n_heads, init_std=init_std, n_ctx=N,
            seed=seed, dtype=d))

    def ref_rel(pe, q, n):
        def make():
            ya, _, _ = _last_token(model(pe, q, torch.float64), seq(n))
            yb, _, _ = _last_token(model(pe, q, torch.float64), seq(n + 1))
            return float((ya - yb).norm() / ya.norm())
        return memo.get_or(("ref", pe, q, n), make)

    def compute(item):
        m = model(item["pe"], item["qkv"], _DTYPES[item["dtype"]])
        n = item["n"]
        a, la, _ = _last_token(m, seq(n))
        b, lb, _ = _last_token(m, seq(n + 1))
        return {"bitwise": bool(torch.equal(a, b)), "same_logits": bool(torch.equal(la, lb)),
                "same_argmax": bool(la.argmax() == lb.argmax()),
                "rel": float((a.double() - b.double()).norm() / a.double().norm()),
                "ref_rel": ref_rel(item["pe"], item["qkv"], n)}

    items = [{"pe": pe, "qkv": q, "dtype": _dname(d), "n": n} for q in qkvs for pe in pes for d in dts
             for n in lengths]
    df = _run_rows(store_dir, config, ["pe", "qkv", "dtype", "n"], items, compute)
    res = CountingPrecisionResult(df=df, meta={**config, "claim": "Cor. B.10", "model": "SyntheticDecoder",
                                                "qkv": qkvs, "lengths": lengths, "dtypes": [_dname(d) for d in dts]})
    res.meta["collapse_lengths"] = res.collapse_lengths().to_dict(orient="records")
    return res


# ---------------------------------------------------------------------------------------
# depth limit (Lemmas B.6, B.7, Props. 5.2/B.8)
# ---------------------------------------------------------------------------------------
def random_causal_attention(
    n: int,
    *,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    keep: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A random ``n x n`` causal attention matrix: ``softmax`` of Gaussian scores (std
    ``scale``) under the causal mask. ``keep < 1`` zeroes each strictly-lower entry with
    probability ``1 - keep`` first (sparser rows; the diagonal always stays)."""
    g = generator or torch.Generator().manual_seed(0)
    s = torch.randn(n, n, generator=g, dtype=dtype) * scale
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    if keep < 1:
        drop = torch.rand(n, n, generator=g, dtype=dtype) > keep
        allowed &= ~(drop & ~torch.eye(n, dtype=torch.bool))
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, -1)


def is_row_stochastic(A: torch.Tensor, *, atol: float = 1e-12) -> bool:
    """Non-negative entries and rows summing to 1 (within ``atol``)."""
    return bool((A >= 0).all() and torch.allclose(A.sum(-1), torch.ones_like(A[..., 0]), atol=atol, rtol=0))


def first_column_limit(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The limit of Prop. B.8: ``1 e_1^T``, ones in the first column, zeros elsewhere."""
    L = torch.zeros(n, n, dtype=dtype)
    L[:, 0] = 1
    return L


def attention_product(mats: Iterable[torch.Tensor], *, residual: bool = True) -> Iterable[torch.Tensor]:
    """Running products ``P_l = M_l ... M_1`` (layer ``l`` applied last, as in the path
    bound), with ``M = (A + I)/2`` when ``residual`` (the attention plus the residual
    connection, normalised; Prop. B.8) or ``M = A``. Yields ``P_1, P_2, …``."""
    P = None
    for A in mats:
        M = (A + torch.eye(A.shape[-1], dtype=A.dtype)) / 2 if residual else A
        P = M if P is None else M @ P
        yield P


def depth_limit(
    n: int = 32,
    depth: int = 128,
    *,
    sources: Sequence[str] = ("random", "model"),
    model_layers: int = 64,
    pe: str = "rope",
    init_std: float | None = 1.0,
    residual: bool = True,
    seed: int = 0,
) -> DepthLimitResult:
    """Props. 5.2/B.8 with Lemmas B.6/B.7. ``"random"``: one random causal attention
    matrix ``A`` (every row has >= 2 non-zeros after the first) repeated ``depth`` times,
    ``P_L = ((A + I)/2)^L``; its distance to ``1 e_1^T`` should shrink like
    ``lambda_2^L``, ``lambda_2`` the largest diagonal entry after the first (the
    eigenvalues of a triangular matrix are its diagonal, Lemma B.6). ``"model"``: the
    head-mean attention patterns of a ``model_layers``-layer causal SyntheticDecoder on a
    random sequence, one matrix per layer. Every product is checked to stay triangular
    and row-stochastic (Lemma B.7)."""
    g = torch.Generator().manual_seed(seed)
    limit = first_column_limit(n)
    rows = []
    meta: dict[str, Any] = {"check": "depth-limit", "claim": "Props. 5.2/B.8, Lemmas B.6/B.7", "n": n,
                            "depth": depth, "residual": residual, "seed": seed, "model": "SyntheticDecoder"}
    stochastic = True
    for src in sources:
        if src == "random":
            A = random_causal_attention(n, generator=g)
            M = (A + torch.eye(n, dtype=A.dtype)) / 2 if residual else A
            diag = torch.diagonal(M)
            lam2 = float(diag[1:].max())
            eig = torch.linalg.eigvals(M)
            eig_err = float((eig.real.sort().values - diag.sort().values).abs().max() + eig.imag.abs().max())
            meta.update(lambda2=lam2, eig_error=eig_err, spectral_radius=float(eig.abs().max()))
            mats: Iterable[torch.Tensor] = (A for _ in range(depth))
        elif src == "model":
            model = SyntheticDecoder(pe, True, n_layers=model_layers, d_model=32, n_heads=4, init_std=init_std,
                                     seed=seed, dtype=torch.float64)
            toks = torch.randint(4, model.cfg.d_vocab, (1, n), generator=g)
            with torch.no_grad():
                _, cache = model.run_with_cache(toks, names_filter=lambda s: s.endswith("attn.hook_pattern"),
                                                return_type=None, return_cache_object=False)
            mats = [cache[f"blocks.{i}.attn.hook_pattern"][0].mean(0) for i in range(model_layers)]
            lam2 = float("nan")
        else:
            raise UnknownNameError("source", src, ["random", "model"])
        for L, P in enumerate(attention_product(mats, residual=residual), start=1):
            stochastic &= is_row_stochastic(P, atol=1e-9) and bool((P.triu(1) == 0).all())
            rows.append({
                "source": src, "depth": L, "dist": float((P - limit).abs().max()),
                "first_col_last_row": float(P[-1, 0]), "lambda2": float(torch.diagonal(P)[1:].max()),
                "predicted": lam2**L if src == "random" else float("nan"),
            })
    df = pd.DataFrame(rows)
    meta["products_stochastic_triangular"] = stochastic
    r = df[df.source == "random"].sort_values("depth")
    if len(r) > 20:
        tail = r.tail(max(5, len(r) // 4))
        meta["rate"] = float(np.exp(np.polyfit(tail.depth, np.log(tail.dist.clip(lower=1e-300)), 1)[0]))
    return DepthLimitResult(df=df, meta=meta)


# ---------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------
def _fig8(quick: bool = False, **kw) -> CollapseByPEResult:
    kw.setdefault("lengths", _pow2(4, 11 if quick else 14))
    kw.setdefault("trials", 4 if quick else 8)
    return collapse_by_pe(("sinusoidal",), init_std=None, figure="Fig. 8", **kw)


def _fig10(quick: bool = False, **kw) -> CollapseByPEResult:
    kw.setdefault("lengths", _pow2(4, 11 if quick else 14))
    kw.setdefault("trials", 4 if quick else 16)
    return collapse_by_pe(PE_NAMES, init_std=1.0, figure="Fig. 10", **kw)


def _counting_precision(quick: bool = False, **kw) -> CountingPrecisionResult:
    if quick:
        kw.setdefault("lengths", _geometric_lengths(1, 2048, 2))
        kw.setdefault("dtypes", (torch.float32, torch.bfloat16))
    else:
        kw.setdefault("qkv", ("computed", "sampled"))
    return counting_precision(**kw)


_RUNNERS: dict[str, Callable[..., Any]] = {
    "softmax-decay": lambda quick=False, **kw: softmax_weight_decay(
        **({"lengths": _pow2(1, 12), "trials": 8} if quick else {}), **kw),
    "tv-decay": lambda quick=False, **kw: softmax_tv_decay(
        **({"lengths": _pow2(4, 12), "trials": 8} if quick else {}), **kw),
    "fig8": _fig8,
    "fig10": _fig10,
    "counting-ratio": lambda quick=False, **kw: counting_ratio(
        **({"dtypes": (torch.float64, torch.bfloat16)} if quick else {}), **kw),
    "counting-precision": _counting_precision,
    "depth-limit": lambda quick=False, **kw: depth_limit(
        **({"depth": 64, "model_layers": 32} if quick else {}), **kw),
}
#: check name -> (the claim it tests, the function running it with ``quick=``)
CHECKS: dict[str, tuple[str, Callable[..., Any]]] = {name: (CATALOG[name], _RUNNERS[name]) for name in CATALOG}


def run_check(name: str, *, quick: bool = False, **kwargs: Any):
    """Run one check by name (a key of :data:`CHECKS`); ``quick`` shrinks it to seconds."""
    if name not in CHECKS:
        raise UnknownNameError("theory check", name, list(CHECKS))
    return CHECKS[name][1](quick=quick, **kwargs)
