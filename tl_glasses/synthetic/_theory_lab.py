"""The theory checks run on the synthetic decoder: representational collapse per
positional encoding (Thm B.3, Figs. 8, 10) and counting (Prop. B.9, Cor. B.10).

Re-exported by :mod:`tl_glasses.synthetic.theory`, where they always were.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .._core import FINAL
from ..capture import run as capture_run
from ..errors import UnknownNameError
from ..sweeps import run_rows
from ._figures import CollapseByPEResult, CountingPrecisionResult, CountingRatioResult
from ._model import BOS_ID, CHAR_VOCAB, SyntheticDecoder
from ._pe import PE_NAMES
from ._theory_base import _DTYPES, _Memo, _dname, _dtype, _pow2


# ---------------------------------------------------------------------------------------
# representational collapse on the synthetic decoder (Thm B.3)
# ---------------------------------------------------------------------------------------
def _last_token(model: SyntheticDecoder, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y_last, logits_last, pattern_last_row_head_mean)`` of one sequence, from the
    fast path (``last_query_only``)."""
    last = f"blocks.{model.cfg.n_layers - 1}.attn.hook_pattern"
    reads = {FINAL: lambda t: t[0, -1].detach().clone(), last: lambda t: t[0, :, -1].detach().float().mean(0)}
    out = capture_run(model, tokens, read=reads, logits=True, forward_kwargs={"last_query_only": True},
                      attn_impl="eager", check=False)
    store, logits = out.acts, out.logits
    return store[FINAL], logits[0, -1].detach(), store[last]


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
    df = run_rows(items, compute, out=store_dir, config=config, key=["pe", "qkv", "trial", "n"],
                  desc=config["check"], progress=sys.stderr.isatty())
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
                    cs = capture_run(model, model.to_tokens(short), read=[FINAL], attn_impl="eager").acts
                    cl = capture_run(model, model.to_tokens(long), read=[FINAL], attn_impl="eager").acts
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
    df = run_rows(items, compute, out=store_dir, config=config, key=["pe", "qkv", "dtype", "n"],
                  desc=config["check"], progress=sys.stderr.isatty())
    res = CountingPrecisionResult(df=df, meta={**config, "claim": "Cor. B.10", "model": "SyntheticDecoder",
                                                "qkv": qkvs, "lengths": lengths, "dtypes": [_dname(d) for d in dts]})
    res.meta["collapse_lengths"] = res.collapse_lengths().to_dict(orient="records")
    return res
