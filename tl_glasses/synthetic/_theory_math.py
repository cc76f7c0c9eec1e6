"""The theory checks that need no model: softmax statements (Lemmas B.1/B.2, Prop. B.4)
and products of causal attention matrices against the first-column limit (Lemmas
B.6/B.7, Props. 5.2/B.8).

Re-exported by :mod:`tl_glasses.synthetic.theory`, where they always were.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..capture import run as capture_run
from ..errors import GlassesError, UnknownNameError
from ._figures import DepthLimitResult, SoftmaxDecayResult, TotalVariationResult, loglog_slope
from ._model import SyntheticDecoder
from ._theory_base import _pow2


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
            names = [f"blocks.{i}.attn.hook_pattern" for i in range(model_layers)]
            cache = capture_run(model, toks, read=names, attn_impl="eager").acts
            mats = [cache[n][0].mean(0) for n in names]
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
