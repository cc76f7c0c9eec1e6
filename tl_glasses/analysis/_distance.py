"""The distance between two last-token representations, and its noise floor.

The engine under :mod:`tl_glasses.analysis.collapse`: dtype helpers, the noise-floor
rule (:func:`apply_floor`, the one place it lives: :class:`LastTokenDistance` and
:func:`~tl_glasses.analysis.collapse.derive_reported` both call it), the comparison of
two captured runs, :func:`last_token_distance` and :func:`noise_floor`.
Import these from :mod:`tl_glasses.analysis.collapse`, which re-exports them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._core import as_tokens, first_nonfinite_hook, model_dtype, require_eval
from ..errors import GlassesError, NumericalError
from ..results import register_result
from . import _prefix_cache as _pc
from ._distance_result import DistanceResult
from ._probe import Capture, LastTokenProbe, is_rotary, run_capture

from .._vocab import _CANONICAL as _DTYPE_NAMES, dtype_name  # noqa: E402,F401
from .._vocab import parse_dtype as _dtype  # noqa: E402
from .._vocab import renamed_kwarg  # noqa: E402


def _ulp(x: torch.Tensor, dtype: torch.dtype) -> float:
    """Spacing of ``dtype`` at the largest entry of ``x``: its resolution there."""
    m = float(x.detach().abs().max()) if x.numel() else 0.0
    if not math.isfinite(m) or m == 0.0:
        return float("nan")
    return 2.0 ** math.floor(math.log2(m)) * float(torch.finfo(dtype).eps)


def _nan() -> float:
    return float("nan")


# -- the noise-floor rule ---------------------------------------------------------------
# The one place it lives: LastTokenDistance's properties and derive_reported (a sweep's
# rows) both call apply_floor / layer_floor / layer_reported.

FLOOR_INPUTS = ("l2_measured", "linf_measured", "rel_measured", "head_mean_measured", "head_min_measured",
                "head_max_measured", "noise_l2", "noise_shift_l2", "noise_batch_l2", "noise_linf",
                "noise_shift_linf", "noise_head", "noise_shift_head")
FLOOR_OUTPUTS = ("floor_l2", "floor_linf", "floor_head", "below_floor", "l2", "rel", "linf", "head_mean",
                 "head_min", "head_max")


def _within(x: np.ndarray, floor: np.ndarray, factor: Any) -> np.ndarray:
    """``x`` is not larger than ``factor`` × ``floor`` (an unknown floor holds nothing)."""
    return np.isfinite(floor) & (x <= factor * floor)


def apply_floor(measured: Mapping[str, Any], floor_factor: Any = 2.0, ok: Any = True) -> dict[str, np.ndarray]:
    """The noise-floor rule, vectorised: from the measured numbers (the keys of
    :data:`FLOOR_INPUTS`, scalars or one array entry per row; a missing key is
    unmeasured, NaN) the floors and the reported values (:data:`FLOOR_OUTPUTS`).

    * ``floor_l2``: the largest of the prefix, shift and batch floors measured (NaN if
      none); ``floor_linf``, ``floor_head``: the larger of the prefix and shift floors;
    * ``below_floor``: ``l2_measured`` ≤ ``floor_factor`` × ``floor_l2``;
    * reported ``l2``, ``rel``: NaN below the floor; ``linf``: NaN below the floor or
      within ``floor_factor`` × ``floor_linf``; ``head_mean``/``head_min``/``head_max``:
      NaN within ``floor_factor`` × ``floor_head``.

    Rows with ``ok`` false (a failed run) report NaN and are not ``below_floor``.
    """
    def col(k: str) -> np.ndarray:
        return np.asarray(measured.get(k, np.nan), dtype=float)

    ff = np.asarray(floor_factor, dtype=float)
    ok = np.asarray(ok, dtype=bool)
    fl2 = np.fmax(np.fmax(col("noise_l2"), col("noise_shift_l2")), col("noise_batch_l2"))
    flinf = np.fmax(col("noise_linf"), col("noise_shift_linf"))
    fhead = np.fmax(col("noise_head"), col("noise_shift_head"))
    l2, rel, linf = col("l2_measured"), col("rel_measured"), col("linf_measured")
    below = _within(l2, fl2, ff)
    out = dict(floor_l2=fl2, floor_linf=flinf, floor_head=fhead, below_floor=below & ok,
               l2=np.where(below | ~ok, np.nan, l2), rel=np.where(below | ~ok, np.nan, rel),
               linf=np.where(below | _within(linf, flinf, ff) | ~ok, np.nan, linf))
    for stat in ("head_mean", "head_min", "head_max"):
        v = col(f"{stat}_measured")
        out[stat] = np.where(_within(v, fhead, ff) | ~ok, np.nan, v)
    return out


def _pad(x: Any, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    x = np.asarray([] if x is None else x, dtype=float).ravel()[:n]
    out[: len(x)] = x
    return out


def layer_floor(prefix: Any, shift: Any, n: int | None = None) -> np.ndarray:
    """Per-layer floor: for each of ``n`` layers (default: the longer list) the larger of
    the prefix and shift floors, NaN where neither was measured."""
    if n is None:
        n = max(len(prefix), len(shift))
    return np.fmax(_pad(prefix, n), _pad(shift, n))


def layer_reported(measured: Any, floor: Any, floor_factor: Any = 2.0) -> np.ndarray:
    """Per-layer reported distances: NaN within ``floor_factor`` × that layer's floor."""
    m = np.asarray(measured, dtype=float)
    return np.where(_within(m, _pad(floor, len(m)), floor_factor), np.nan, m)

# ------------------------------------------------------------------------------------
@dataclass
class _Measured:
    """The fields of :class:`LastTokenDistance` (a dataclass: ``dataclasses.replace`` works)."""

    l2_measured: float
    linf_measured: float
    rel_measured: float
    per_layer_measured: list[float]
    heads_measured: list[float]
    bitwise_equal: bool
    same_argmax: bool | None
    argmax_a: int | None
    argmax_b: int | None
    next_token_tv: float
    n_tokens_a: int
    n_tokens_b: int
    dtype: str
    mode: str = "native"
    attn_impl: str = "eager"
    floor_factor: float = 2.0
    noise_l2: float = float("nan")
    noise_linf: float = float("nan")
    noise_head: float = float("nan")
    noise_layer: list[float] = field(default_factory=list)
    noise_shift_l2: float = float("nan")
    noise_shift_linf: float = float("nan")
    noise_shift_head: float = float("nan")
    noise_shift_layer: list[float] = field(default_factory=list)
    noise_batch_l2: float = float("nan")
    eps: float = float("nan")
    ulp_y: float = float("nan")
    ulp_z: float = float("nan")
    norm_y: float = float("nan")
    y_a: torch.Tensor | None = field(default=None, repr=False)
    y_b: torch.Tensor | None = field(default=None, repr=False)


@register_result
class LastTokenDistance(_Measured, DistanceResult):
    """Distances between the last-token representations of two inputs ``a`` and ``b``.

    Reported fields (NaN when the value is within the noise floor — see
    ``below_floor`` — so that a floor is never read as a distance):
    ``linf``, ``l2``, ``rel`` (L2 relative to ‖y_a‖), ``per_layer`` (L2 of each
    layer's ``resid_post``), ``head_mean``/``head_min``/``head_max`` (L2 of each
    last-layer head's ``hook_z``, mean/min/max over heads).
    Exact behavioural fields: ``bitwise_equal`` (y_a and y_b identical in the
    model's dtype), ``same_argmax`` and ``next_token_tv`` (total variation between
    the two next-token distributions).
    The measured numbers are kept in ``*_measured``; the noise floors in ``noise_*``:
    ``prefix`` (the last shared token, computed in both runs), ``shift`` (``a`` run at
    positions shifted by one: rotary models only), ``batch`` (``a`` and ``b`` run as
    one padded batch, when measured).
    A :class:`~tl_glasses.results.Result`: ``df`` is the one row of :meth:`as_row`,
    ``tensors`` holds ``y_a``/``y_b``, ``plot()`` draws the per-layer distances.
    """

    # -- floors (the rule is apply_floor's, shared with derive_reported) --------------
    def _rule(self, key: str) -> float:
        return float(apply_floor(self.raw_row(), self.floor_factor)[key])

    @property
    def floor_l2(self) -> float:
        return self._rule("floor_l2")

    @property
    def floor_linf(self) -> float:
        return self._rule("floor_linf")

    @property
    def floor_head(self) -> float:
        return self._rule("floor_head")

    @property
    def per_layer_floor(self) -> list[float]:
        return [float(x) for x in layer_floor(self.noise_layer, self.noise_shift_layer)]

    @property
    def below_floor(self) -> bool:
        """The final-representation distance is within the noise floor."""
        return bool(apply_floor(self.raw_row(), self.floor_factor)["below_floor"])

    # -- reported values ------------------------------------------------------------
    @property
    def l2(self) -> float:
        return self._rule("l2")

    @property
    def linf(self) -> float:
        return self._rule("linf")

    @property
    def rel(self) -> float:
        return self._rule("rel")

    @property
    def per_layer(self) -> list[float]:
        rep = layer_reported(self.per_layer_measured, self.per_layer_floor, self.floor_factor)
        return [float(x) for x in rep]

    @property
    def head_mean(self) -> float:
        return self._rule("head_mean")

    @property
    def head_min(self) -> float:
        return self._rule("head_min")

    @property
    def head_max(self) -> float:
        return self._rule("head_max")

    def raw_row(self) -> dict[str, Any]:
        """The measured numbers only (what a sweep stores on disk)."""
        hm = self.heads_measured
        return dict(
            l2_measured=self.l2_measured, linf_measured=self.linf_measured, rel_measured=self.rel_measured,
            head_mean_measured=float(np.mean(hm)) if hm else _nan(),
            head_min_measured=float(np.min(hm)) if hm else _nan(),
            head_max_measured=float(np.max(hm)) if hm else _nan(),
            per_layer_measured=list(self.per_layer_measured), heads_measured=list(hm),
            bitwise_equal=bool(self.bitwise_equal), same_argmax=self.same_argmax,
            argmax_a=self.argmax_a, argmax_b=self.argmax_b, next_token_tv=self.next_token_tv,
            noise_l2=self.noise_l2, noise_linf=self.noise_linf, noise_head=self.noise_head,
            noise_layer=list(self.noise_layer), noise_shift_l2=self.noise_shift_l2,
            noise_shift_linf=self.noise_shift_linf, noise_shift_head=self.noise_shift_head,
            noise_shift_layer=list(self.noise_shift_layer), noise_batch_l2=self.noise_batch_l2,
            n_tokens_a=self.n_tokens_a, n_tokens_b=self.n_tokens_b, dtype=self.dtype, mode=self.mode,
            attn_impl=self.attn_impl, eps=self.eps, ulp_y=self.ulp_y, ulp_z=self.ulp_z, norm_y=self.norm_y,
            floor_factor=self.floor_factor,
        )

    def as_row(self) -> dict[str, Any]:
        """Measured numbers, floors, and the reported values (NaN within the floor)."""
        return dict(
            self.raw_row(), l2=self.l2, linf=self.linf, rel=self.rel, head_mean=self.head_mean,
            head_min=self.head_min, head_max=self.head_max, per_layer=self.per_layer,
            below_floor=self.below_floor, floor_l2=self.floor_l2, floor_linf=self.floor_linf,
            floor_head=self.floor_head, per_layer_floor=self.per_layer_floor,
        )

    def __repr__(self) -> str:
        if self.below_floor:
            d = (f"within the noise floor (measured L2 {self.l2_measured:.3g} <= {self.floor_factor:g} x "
                 f"floor {self.floor_l2:.3g})")
        else:
            d = f"l2={self.l2_measured:.4g} (rel {self.rel_measured:.3g}), linf={self.linf_measured:.4g}"
        return (
            f"LastTokenDistance({self.dtype}{'' if self.mode == 'native' else ' ' + self.mode}: {d}; "
            f"bitwise_equal={self.bitwise_equal}, same_argmax={self.same_argmax}, "
            f"next_token_tv={self.next_token_tv:.3g}; tokens {self.n_tokens_a} vs {self.n_tokens_b})"
        )


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    m = min(a.shape[-1], b.shape[-1])
    diff = (a[0, :m] != b[0, :m]).nonzero()
    return int(diff[0]) if len(diff) else m


def _indexes(na: int, nb: int, p: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Capture index for a and b: the shared-prefix position p-1 (if any), then the last."""
    ia = ([(0, p - 1)] if p >= 1 and p - 1 != na - 1 else []) + [(0, na - 1)]
    ib = ([(0, p - 1)] if p >= 1 and p - 1 != nb - 1 else []) + [(0, nb - 1)]
    return ia, ib


def _pos_row(index, pos: int) -> int:
    for i, (_, p) in enumerate(index):
        if p == pos:
            return i
    raise KeyError(pos)


def _diffs(ca: Capture, ra: int, cb: Capture, rb: int) -> tuple[float, float, list[float], list[float]]:
    """L2, L∞ of y; per-layer L2 of resid_post; per-head L2 of the last layer's z."""
    d = cb.y[rb].double() - ca.y[ra].double()
    layer = [] if ca.resid is None else (cb.resid[rb].double() - ca.resid[ra].double()).norm(dim=-1).tolist()
    heads: list[float] = []
    if ca.z:
        L = max(ca.z)
        heads = (cb.z[L][rb].double() - ca.z[L][ra].double()).norm(dim=-1).tolist()
    return float(d.norm()), float(d.abs().max()), layer, heads


def _compare(cap_a: Capture, cap_b: Capture, na: int, nb: int, p: int, *, dtype: torch.dtype,
             mode: str, floor_factor: float, shifted: Capture | None = None) -> LastTokenDistance:
    ra, rb = _pos_row(cap_a.index, na - 1), _pos_row(cap_b.index, nb - 1)
    ya, yb = cap_a.y[ra], cap_b.y[rb]
    l2, linf, per_layer, heads = _diffs(cap_a, ra, cap_b, rb)
    norm_y = float(ya.double().norm())
    floors: dict[str, Any] = {}
    if p >= 1:  # the last shared token, computed in both runs
        e2, einf, elay, ehead = _diffs(cap_a, _pos_row(cap_a.index, p - 1), cap_b, _pos_row(cap_b.index, p - 1))
        floors.update(noise_l2=e2, noise_linf=einf, noise_layer=elay,
                      noise_head=max(ehead) if ehead else _nan())
    if shifted is not None:  # a itself, one position further along
        e2, einf, elay, ehead = _diffs(cap_a, ra, shifted, _pos_row(shifted.index, na - 1))
        floors.update(noise_shift_l2=e2, noise_shift_linf=einf, noise_shift_layer=elay,
                      noise_shift_head=max(ehead) if ehead else _nan())
    ulp_z = _nan()
    if cap_a.z:
        ulp_z = _ulp(cap_a.z[max(cap_a.z)][ra], dtype)
    same = am_a = am_b = None
    tv = _nan()
    if cap_a.logits is not None and cap_b.logits is not None:
        la, lb = cap_a.logits, cap_b.logits
        am_a, am_b = int(la.argmax()), int(lb.argmax())
        same = am_a == am_b
        pa, pb = torch.softmax(la.double(), -1), torch.softmax(lb.double(), -1)
        tv = float(0.5 * (pa - pb).abs().sum())
    return LastTokenDistance(
        l2_measured=l2, linf_measured=linf, rel_measured=l2 / norm_y if norm_y > 0 else _nan(),
        per_layer_measured=per_layer, heads_measured=heads, bitwise_equal=bool(torch.equal(ya, yb)),
        same_argmax=same, argmax_a=am_a, argmax_b=am_b, next_token_tv=tv, n_tokens_a=na, n_tokens_b=nb,
        dtype=dtype_name(dtype), mode=mode, attn_impl=cap_a.attn_impl, floor_factor=floor_factor,
        eps=float(torch.finfo(dtype).eps), ulp_y=_ulp(ya, dtype), ulp_z=ulp_z, norm_y=norm_y,
        y_a=ya.detach().clone(), y_b=yb.detach().clone(), **floors,
    )


def _run_pair(model, ta: torch.Tensor, tb: torch.Tensor, probe: LastTokenProbe, *, hooks=(),
              mitigation=None, attn_impl="auto", prefix_cache: bool = False) -> tuple[Capture, Capture, int]:
    """Both runs of a pair, captured at the shared-prefix position and the last.

    ``prefix_cache``: run the tokens the two share (all but the last shared one) once,
    keep their keys/values, and run each tail from a copy of that cache — where the
    pair allows it (no hooks or model edits, a shared prefix of ≥ 2 tokens) and the
    cached path was verified on this model against two full forwards
    (:func:`~tl_glasses.analysis._prefix_cache.prefix_cache_supported`); otherwise the
    two full forwards."""
    p = _common_prefix(ta, tb)
    ia, ib = _indexes(ta.shape[-1], tb.shape[-1], p)
    if prefix_cache and _pc.applies(model, p, hooks, mitigation) \
            and _pc.prefix_cache_supported(model, attn_impl, ta.shape[-1]):
        ca, cb = _pc.run_cached_tails(model, ta, tb, probe, ia, ib, p - 1, attn_impl=attn_impl, mitigation=mitigation)
        return ca, cb, p
    ca = run_capture(model, ta, probe, ia, fwd_hooks=hooks, mitigation=mitigation, attn_impl=attn_impl)
    cb = run_capture(model, tb, probe, ib, fwd_hooks=hooks, mitigation=mitigation, attn_impl=attn_impl)
    return ca, cb, p


def _run_shifted(model, ta: torch.Tensor, probe: LastTokenProbe, *, hooks=(), mitigation=None,
                 attn_impl="auto") -> Capture | None:
    """``a`` run at positions 1..n instead of 0..n-1 (rotary models: a no-op in exact
    arithmetic), captured at its last position."""
    if not is_rotary(model):
        return None
    n = ta.shape[-1]
    pos = torch.arange(1, n + 1, device=ta.device)[None]
    return run_capture(model, ta, probe, [(0, n - 1)], fwd_hooks=hooks, mitigation=mitigation,
                       attn_impl=attn_impl, logits=False, position_ids=pos)


def _check_finite(model, ta, tb, ca: Capture, cb: Capture) -> str | None:
    if ca.finite() and cb.finite():
        return None
    bad = ta if not ca.finite() else tb
    try:
        with warnings.catch_warnings():  # TransformerLens lists hook names it skips
            warnings.simplefilter("ignore")
            where = first_nonfinite_hook(model, bad)
    except Exception:  # noqa: BLE001
        where = None
    return f"{where} (first in an eager re-run)" if where else "the captured representations"


def last_token_distance(
    model,
    a,
    b,
    *,
    fwd_hooks: Sequence[tuple[Any, Any]] = (),
    mitigation=None,
    layers: bool = True,
    heads: str | bool = "last",
    attn_impl: str = "auto",
    prepend_bos: bool | None = None,
    floor_factor: float = 2.0,
    shift_floor: bool = True,
    round_to: torch.dtype | str | None = None,
    prefix_cache: bool = False,
    **renamed: Any,
) -> LastTokenDistance:
    """Distances between the last-token representations of ``a`` and ``b``.

    ``a``/``b``: strings (tokenised like ``model.to_tokens``) or token tensors (used as
    given: no BOS added). ``fwd_hooks``: your own forward hooks, applied to both runs
    (``hooks=``, its old name, is accepted until the next release, with a DeprecationWarning);
    ``mitigation``: a mitigation's model edits (hooks/patches) applied to both runs
    (prompt transforms need a family: see :func:`collapse_sweep`).
    ``attn_impl``: ``"auto"`` (a fused kernel when no hook needs attention patterns),
    ``"eager"`` or ``"sdpa"``. ``shift_floor``: also run ``a`` one position further
    along (rotary models) to measure the noise floor. ``round_to``: round the
    representations to that dtype before comparing (the "round fp32 to D" estimate;
    ``mode="round"``). ``prefix_cache``: compute the prefix both share once, with a
    key/value cache (verified against two full forwards first; see :func:`_run_pair`).
    """
    from ..interventions import as_mitigation

    fwd_hooks = renamed_kwarg(renamed, "hooks", "fwd_hooks", fwd_hooks, default=(), where="last_token_distance")
    if renamed:
        raise TypeError(f"last_token_distance() got an unexpected keyword argument {next(iter(renamed))!r}")
    require_eval(model)
    mit = as_mitigation(mitigation)
    if mit is not None and mit.has_transform and not mit.has_model_edits:
        raise GlassesError(
            f"{mit.label} transforms prompts; apply it to a family with collapse_sweep(..., "
            f"mitigations=[...]) or build the prompts with mitigation.transform(spec)"
        )
    ta, tb = as_tokens(model, a, prepend_bos=prepend_bos), as_tokens(model, b, prepend_bos=prepend_bos)
    probe = LastTokenProbe(model, layers=layers, heads=heads)
    ca, cb, p = _run_pair(model, ta, tb, probe, hooks=fwd_hooks, mitigation=mit, attn_impl=attn_impl,
                          prefix_cache=prefix_cache)
    where = _check_finite(model, ta, tb, ca, cb)
    if where is not None:
        raise NumericalError(
            f"NaN/Inf at {where} (dtype {dtype_name(model_dtype(model))}); in float16 this is usually "
            f"overflow: use bfloat16 or float32"
        )
    cs = _run_shifted(model, ta, probe, hooks=fwd_hooks, mitigation=mit, attn_impl=attn_impl) if shift_floor else None
    dt, mode = model_dtype(model), "native"
    if round_to is not None:
        dt, mode = _dtype(round_to), "round"
        ca, cb = ca.to(dt), cb.to(dt)
        cs = None if cs is None else cs.to(dt)
    return _compare(ca, cb, ta.shape[-1], tb.shape[-1], p, dtype=dt, mode=mode, floor_factor=floor_factor,
                    shifted=cs)


def noise_floor(model, tokens, *, layers: bool = False, attn_impl: str = "auto", pad_id: int | None = None,
                prepend_bos: bool | None = None) -> dict[str, float]:
    """Rounding noise of the last-token representation of ``tokens`` under changes that
    cannot matter in exact arithmetic: (1) one more token appended after it, (2) the
    sequence run in a batch of two, right-padded, (3) rotary models: the sequence run
    one position further along. Returns the L2/L∞ distances and ‖y‖."""
    t = as_tokens(model, tokens, prepend_bos=prepend_bos)
    n = t.shape[-1]
    probe = LastTokenProbe(model, layers=layers, heads=False)
    base = run_capture(model, t, probe, [(0, n - 1)], attn_impl=attn_impl, logits=False).y[0]
    longer = torch.cat([t, t[:, -1:]], dim=1)
    app = run_capture(model, longer, probe, [(0, n - 1)], attn_impl=attn_impl, logits=False).y[0]
    pad = _pad_id(model) if pad_id is None else pad_id
    batch = torch.cat([torch.cat([t, torch.full_like(t[:, :1], pad)], 1), longer], 0)
    bat = run_capture(model, batch, probe, [(0, n - 1)], attn_impl=attn_impl, logits=False).y[0]
    runs = [("append", app), ("batch", bat)]
    sh = _run_shifted(model, t, probe, attn_impl=attn_impl)
    if sh is not None:
        runs.append(("shift", sh.y[0]))
    out = {}
    for k, v in runs:
        d = (v.double() - base.double())
        out[f"{k}_l2"], out[f"{k}_linf"] = float(d.norm()), float(d.abs().max())
    out["norm_y"] = float(base.double().norm())
    return out


def _pad_id(model) -> int:
    tok = getattr(model, "tokenizer", None)
    pid = getattr(tok, "pad_token_id", None)
    return int(pid) if pid is not None else 0


def _batch_floor(model, ta, tb, probe, ca: Capture, cb: Capture, *, mitigation, attn_impl) -> float:
    """Both sequences of the pair run as one right-padded batch of two; the largest
    change of either last-token representation against the single runs."""
    na, nb = ta.shape[-1], tb.shape[-1]
    width = max(na, nb)
    pad = _pad_id(model)

    def padded(t):
        return torch.cat([t, torch.full((1, width - t.shape[-1]), pad, dtype=t.dtype, device=t.device)], 1)

    batch = torch.cat([padded(ta), padded(tb)], 0)
    cap = run_capture(model, batch, probe, [(0, na - 1), (1, nb - 1)], mitigation=mitigation,
                      attn_impl=attn_impl, logits=False)
    ya, yb = ca.y[_pos_row(ca.index, na - 1)], cb.y[_pos_row(cb.index, nb - 1)]
    return max(float((cap.y[0].double() - ya.double()).norm()), float((cap.y[1].double() - yb.double()).norm()))
