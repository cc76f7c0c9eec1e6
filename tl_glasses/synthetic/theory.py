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

Layout: this module is the catalogue of checks and their runners; the checks that need
no model are in :mod:`~tl_glasses.synthetic._theory_math`, those run on the synthetic
decoder in :mod:`~tl_glasses.synthetic._theory_lab`, shared helpers in
:mod:`~tl_glasses.synthetic._theory_base`, the result classes in
:mod:`~tl_glasses.synthetic._figures`. Every name is re-exported here, where it always was.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import UnknownNameError
# re-exported: every name importable from here before the split still is (importing this
# module also registers the result classes, so results saved before the split still load)
from ._catalog import CATALOG
from ._figures import (
    CollapseByPEResult,
    CountingPrecisionResult,
    CountingRatioResult,
    DepthLimitResult,
    SoftmaxDecayResult,
    TotalVariationResult,
    loglog_slope,
)
from ._model import BOS_ID, CHAR_VOCAB, SyntheticDecoder  # noqa: F401
from ._pe import PE_NAMES
from ._theory_base import _DTYPES, _Memo, _dname, _dtype, _pow2  # noqa: F401
from ._theory_lab import (  # noqa: F401
    DEFAULT_RATIO_PAIRS,
    _geometric_lengths,
    _last_token,
    _same_ratio,
    collapse_by_pe,
    counting_precision,
    counting_ratio,
)
from ._theory_math import (
    attention_product,
    depth_limit,
    first_column_limit,
    fraction_tv_closed_form,
    is_row_stochastic,
    random_causal_attention,
    softmax_tv_decay,
    softmax_weight_decay,
    tv_distance,
)

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
