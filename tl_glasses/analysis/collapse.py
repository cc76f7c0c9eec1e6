"""Representational collapse (paper Sec. 4, Thm 4.2 / B.3, Fig. 5; App. C.5, C.6).

Pair a sequence ``v`` with ``v*`` = ``v`` with its last item repeated and compare the
final normalised representations of their last tokens, ``y_n(v)`` and ``y_{n+1}(v*)``
(``ln_final.hook_out``: what the unembedding reads), per layer (``resid_post``) and
per head of the last layer (``hook_z``), as ``n`` grows.

* :func:`last_token_distance` — the primitive, for any two prompts;
* :func:`collapse_sweep` — a family of pairs over lengths × dtypes × mitigations,
  rows written to disk as they are produced, resumable; returns a
  :class:`CollapseResult` (``.df``, ``.collapse_length()``, ``.plot()``).

Noise floor. Every pair also yields, for free, the distance between two computations
that must agree exactly in exact arithmetic: the representation of the last token the
two inputs share, computed in the run of ``v`` and in the run of ``v*`` (a causal
model cannot see what follows). Its size is the rounding noise of the kernels at that
length and dtype. Optionally (``batch_floor``) the same sequence is also run in a
batch of two (right-padded), another harmless change. A distance not larger than
``floor_factor`` times the floor is *within the noise floor*: it is reported as such
(``below_floor=True``, reported distance NaN) and never as a distance.
"""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .._core import as_tokens, first_nonfinite_hook, model_dtype, require_eval
from ..errors import GlassesError, NumericalError
from ..results import Result, register_result
from ._probe import Capture, LastTokenProbe, is_rotary, run_capture

__all__ = [
    "LastTokenDistance",
    "LastTokenProbe",
    "CollapseResult",
    "last_token_distance",
    "collapse_sweep",
    "noise_floor",
    "model_for_dtype",
    "dtype_name",
    "parse_lengths",
    "derive_reported",
]

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float64: "float64"}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _dtype(d) -> torch.dtype:
    from ..models import resolve_dtype

    return resolve_dtype(d)


def _ulp(x: torch.Tensor, dtype: torch.dtype) -> float:
    """Spacing of ``dtype`` at the largest entry of ``x``: its resolution there."""
    m = float(x.detach().abs().max()) if x.numel() else 0.0
    if not math.isfinite(m) or m == 0.0:
        return float("nan")
    return 2.0 ** math.floor(math.log2(m)) * float(torch.finfo(dtype).eps)


def _nan() -> float:
    return float("nan")


def _gt(x: float, floor: float, factor: float) -> bool:
    """x is above the floor (unknown floor -> True)."""
    return not (math.isfinite(floor) and x <= factor * floor)


def _nanmax(*vals: float) -> float:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return max(v) if v else _nan()


# ------------------------------------------------------------------------------------
@dataclass
class LastTokenDistance:
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
    """

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

    # -- floors ------------------------------------------------------------------
    @property
    def floor_l2(self) -> float:
        return _nanmax(self.noise_l2, self.noise_shift_l2, self.noise_batch_l2)

    @property
    def floor_linf(self) -> float:
        return _nanmax(self.noise_linf, self.noise_shift_linf)

    @property
    def floor_head(self) -> float:
        return _nanmax(self.noise_head, self.noise_shift_head)

    @property
    def per_layer_floor(self) -> list[float]:
        a, b = self.noise_layer, self.noise_shift_layer
        n = max(len(a), len(b))
        return [_nanmax(a[i] if i < len(a) else _nan(), b[i] if i < len(b) else _nan()) for i in range(n)]

    @property
    def below_floor(self) -> bool:
        """The final-representation distance is within the noise floor."""
        return not _gt(self.l2_measured, self.floor_l2, self.floor_factor)

    # -- reported values ------------------------------------------------------------
    @property
    def l2(self) -> float:
        return _nan() if self.below_floor else self.l2_measured

    @property
    def linf(self) -> float:
        if self.below_floor or not _gt(self.linf_measured, self.floor_linf, self.floor_factor):
            return _nan()
        return self.linf_measured

    @property
    def rel(self) -> float:
        return _nan() if self.below_floor else self.rel_measured

    @property
    def per_layer(self) -> list[float]:
        fl = self.per_layer_floor
        return [d if _gt(d, fl[i] if i < len(fl) else _nan(), self.floor_factor) else _nan()
                for i, d in enumerate(self.per_layer_measured)]

    def _head(self, v: float) -> float:
        return v if _gt(v, self.floor_head, self.floor_factor) else _nan()

    @property
    def head_mean(self) -> float:
        return self._head(float(np.mean(self.heads_measured))) if self.heads_measured else _nan()

    @property
    def head_min(self) -> float:
        return self._head(float(np.min(self.heads_measured))) if self.heads_measured else _nan()

    @property
    def head_max(self) -> float:
        return self._head(float(np.max(self.heads_measured))) if self.heads_measured else _nan()

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
              mitigation=None, attn_impl="auto") -> tuple[Capture, Capture, int]:
    p = _common_prefix(ta, tb)
    ia, ib = _indexes(ta.shape[-1], tb.shape[-1], p)
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
    hooks: Sequence[tuple[Any, Any]] = (),
    mitigation=None,
    layers: bool = True,
    heads: str | bool = "last",
    attn_impl: str = "auto",
    prepend_bos: bool | None = None,
    floor_factor: float = 2.0,
    shift_floor: bool = True,
    round_to: torch.dtype | str | None = None,
) -> LastTokenDistance:
    """Distances between the last-token representations of ``a`` and ``b``.

    ``a``/``b``: strings (tokenised like ``model.to_tokens``) or token tensors (used as
    given: no BOS added). ``hooks``: your own forward hooks, applied to both runs;
    ``mitigation``: a mitigation's model edits (hooks/patches) applied to both runs
    (prompt transforms need a family: see :func:`collapse_sweep`).
    ``attn_impl``: ``"auto"`` (a fused kernel when no hook needs attention patterns),
    ``"eager"`` or ``"sdpa"``. ``shift_floor``: also run ``a`` one position further
    along (rotary models) to measure the noise floor. ``round_to``: round the
    representations to that dtype before comparing (the "round fp32 to D" estimate;
    ``mode="round"``).
    """
    from ..interventions import as_mitigation

    require_eval(model)
    mit = as_mitigation(mitigation)
    if mit is not None and mit.has_transform and not mit.has_model_edits:
        raise GlassesError(
            f"{mit.label} transforms prompts; apply it to a family with collapse_sweep(..., "
            f"mitigations=[...]) or build the prompts with mitigation.transform(spec)"
        )
    ta, tb = as_tokens(model, a, prepend_bos=prepend_bos), as_tokens(model, b, prepend_bos=prepend_bos)
    probe = LastTokenProbe(model, layers=layers, heads=heads)
    ca, cb, p = _run_pair(model, ta, tb, probe, hooks=hooks, mitigation=mit, attn_impl=attn_impl)
    where = _check_finite(model, ta, tb, ca, cb)
    if where is not None:
        raise NumericalError(
            f"NaN/Inf at {where} (dtype {dtype_name(model_dtype(model))}); in float16 this is usually "
            f"overflow: use bfloat16 or float32"
        )
    cs = _run_shifted(model, ta, probe, hooks=hooks, mitigation=mit, attn_impl=attn_impl) if shift_floor else None
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


# ------------------------------------------------------------------------------------
def model_for_dtype(model, dtype: torch.dtype | str):
    """The same model in ``dtype`` (a real cast, for native low-precision runs).

    Embedded models are reloaded in that dtype (as transformers would run them);
    other models are deep-copied and cast, rotary frequency buffers kept exact. The
    model given is never modified.
    """
    from ..models import load_model, model_info

    dtype = _dtype(dtype)
    if model_dtype(model) == dtype:
        return model
    info = model_info(model)
    if info.get("source") == "embedded" and info.get("name"):
        return load_model(info["name"], dtype=dtype, device=str(next(model.parameters()).device))
    clone = copy.deepcopy(model)
    keep = {n: b.detach().clone() for n, b in clone.named_buffers() if "inv_freq" in n}
    clone = clone.to(dtype)
    for n, b in clone.named_buffers():
        if n in keep:
            b.data = keep[n]
    clone.eval()
    info = dict(info)
    info["dtype"] = str(dtype)
    clone.__dict__["tl_glasses_info"] = info
    return clone


def parse_lengths(spec) -> list[int]:
    """``"8:1024:32"`` (start:stop:step, stop included when hit), ``"8,16,32"``,
    a range or a list of ints."""
    try:
        return _parse_lengths(spec)
    except GlassesError:
        raise
    except (ValueError, TypeError, OverflowError):
        raise GlassesError(
            f"cannot read the lengths {spec!r}: write start:stop:step (e.g. 8:1024:32), "
            f"a comma list (e.g. 8,16,32) or a list of positive integers"
        ) from None


def _parse_lengths(spec) -> list[int]:
    if isinstance(spec, str):
        spec = spec.strip()
        if ":" in spec:
            parts = [int(x) for x in spec.split(":")]
            if len(parts) == 2:
                parts.append(1)
            if len(parts) != 3 or parts[2] <= 0:
                raise GlassesError(f"lengths {spec!r}: write start:stop:step, e.g. 8:1024:32")
            out = list(range(parts[0], parts[1] + 1, parts[2]))
        else:
            out = [int(x) for x in spec.replace(" ", "").split(",") if x]
    else:
        out = [int(x) for x in spec]
    if not out:
        raise GlassesError(f"no lengths in {spec!r}")
    if min(out) < 1:
        raise GlassesError("lengths are numbers of items, at least 1")
    return sorted(dict.fromkeys(out))


# ------------------------------------------------------------------------------------
@register_result
@dataclass(repr=False)
class CollapseResult(Result):
    """Rows of a collapse sweep: one per length × dtype × mode × mitigation.

    ``mode`` is ``"native"`` (the model run in that dtype) or ``"round"`` (float32
    representations rounded to the dtype afterwards — an estimate, labelled so).
    """

    title = "representational collapse"

    def arms(self) -> pd.DataFrame:
        return self.df[["dtype", "mode", "mitigation"]].drop_duplicates().reset_index(drop=True)

    def curve(self, dtype="float32", mitigation: str | None = "none", mode: str = "native") -> pd.DataFrame:
        dt = dtype if isinstance(dtype, str) and dtype in _DTYPE_NAMES.values() else dtype_name(_dtype(dtype))
        mit = "none" if mitigation in (None, "none") else getattr(mitigation, "label", mitigation)
        sel = self.df[(self.df["dtype"] == dt) & (self.df["mode"] == mode) & (self.df["mitigation"] == mit)]
        return sel.sort_values("n").reset_index(drop=True)

    def collapse_length(self, dtype="float32", mitigation: str | None = "none", *, mode: str = "native",
                        criterion: str = "bitwise") -> int | None:
        """Smallest ``n`` from which the pair stays collapsed for every larger ``n`` of
        the sweep: ``criterion="bitwise"`` (y(v) and y(v*) identical in that dtype) or
        ``"argmax"`` (same next-token argmax). ``None``: did not collapse in range."""
        col = {"bitwise": "bitwise_equal", "argmax": "same_argmax"}.get(criterion)
        if col is None:
            raise GlassesError(f"criterion is 'bitwise' or 'argmax', not {criterion!r}")
        c = self.curve(dtype, mitigation, mode)
        c = c[c["status"] == "ok"] if "status" in c else c
        if c.empty:
            return None
        held = c[col].fillna(False).astype(bool).to_numpy()
        if not held[-1]:
            return None
        k = len(held) - 1
        while k > 0 and held[k - 1]:
            k -= 1
        return int(c["n"].iloc[k])

    def collapse_table(self) -> pd.DataFrame:
        """Per arm: collapse lengths (bitwise, argmax), the range of n, and the smallest
        distance seen above the noise floor."""
        rows = []
        for _, arm in self.arms().iterrows():
            c = self.curve(arm["dtype"], arm["mitigation"], arm["mode"])
            ok = c[c["status"] == "ok"] if "status" in c else c
            above = ok[~ok["below_floor"].astype(bool)]
            rows.append(dict(
                dtype=arm["dtype"], mode=arm["mode"], mitigation=arm["mitigation"],
                n_min=int(c["n"].min()), n_max=int(c["n"].max()), rows=len(c),
                collapse_bitwise=self.collapse_length(arm["dtype"], arm["mitigation"], mode=arm["mode"]),
                collapse_argmax=self.collapse_length(arm["dtype"], arm["mitigation"], mode=arm["mode"],
                                                     criterion="argmax"),
                min_l2=float(above["l2"].min()) if len(above) else _nan(),
                min_rel=float(above["rel"].min()) if len(above) else _nan(),
                n_at_min=int(above.loc[above["l2"].idxmin(), "n"]) if len(above) else None,
                rows_below_floor=int(ok["below_floor"].astype(bool).sum()),
                rows_bitwise_equal=int(ok["bitwise_equal"].astype(bool).sum()),
                nonfinite=int((c["status"] != "ok").sum()) if "status" in c else 0,
            ))
        return pd.DataFrame(rows)

    def summary(self) -> str:
        if self.df.empty:
            return "no rows"
        parts = []
        for _, r in self.collapse_table().iterrows():
            cl = r["collapse_bitwise"]
            what = f"collapses (bitwise) from n={cl}" if cl is not None and not pd.isna(cl) else (
                f"no collapse in n={r['n_min']}..{r['n_max']}")
            md = "" if pd.isna(r["min_l2"]) else f", min L2 {r['min_l2']:.3g} (rel {r['min_rel']:.2g})"
            tag = "" if r["mode"] == "native" else " [round-fp32 estimate]"
            parts.append(f"{r['dtype']}{tag}/{r['mitigation']}: {what}{md}")
        fam = self.meta.get("family", {}).get("name", "?")
        return f"family {fam!r}, {len(self.df)} rows — " + "; ".join(parts)

    def plot(self, ax=None, *, metric: str = "head", dtype=None, mitigation=None, mode=None,
             resolution: bool = True, floor: bool = True):
        """Fig. 5 style: distance vs n (log y); ``metric="head"`` draws the mean over
        last-layer heads with the min–max band, ``"l2"``/``"linf"`` the final
        representation. Dashed: ``floor_factor`` × noise floor; dotted: the dtype's
        resolution at the compared entries; ▽ markers: rows within the noise floor.

        Without ``ax``, one panel per dtype (and per mode: native run / rounded
        estimate), the mitigations side by side in each."""
        import matplotlib.pyplot as plt

        if metric not in ("head", "l2", "linf", "rel"):
            raise GlassesError(f"metric is 'head', 'l2', 'linf' or 'rel', not {metric!r}")
        if ax is None:
            panels = self._filtered_arms(dtype, mitigation, mode)[["dtype", "mode"]].drop_duplicates()
            k = max(1, len(panels))
            cols = min(k, 3)
            rows_ = (k + cols - 1) // cols
            fig, axes = plt.subplots(rows_, cols, figsize=(5.2 * cols, 3.8 * rows_), squeeze=False,
                                     sharey=True)
            for a, (_, pn) in zip(axes.flat, panels.iterrows()):
                self.plot(a, metric=metric, dtype=pn["dtype"], mitigation=mitigation, mode=pn["mode"],
                          resolution=resolution, floor=floor)
                a.set_title(f"{pn['dtype']}" + (" — fp32 rounded (estimate)" if pn["mode"] == "round" else ""),
                            fontsize=9)
            for a in list(axes.flat)[k:]:
                a.set_visible(False)
            fam = self.meta.get("family", {}).get("name", "")
            fig.suptitle(f"{self.meta.get('model', '')} · {fam} ({self.meta.get('level', '')} level)", fontsize=10)
            fig.tight_layout()
            return fig
        arms = self._filtered_arms(dtype, mitigation, mode)
        self._draw(ax, arms, metric, resolution, floor)
        return ax.figure

    def _filtered_arms(self, dtype, mitigation, mode) -> pd.DataFrame:
        arms = self.arms()
        if dtype is not None:
            dn = {dtype_name(_dtype(d)) for d in (dtype if isinstance(dtype, (list, tuple)) else [dtype])}
            arms = arms[arms["dtype"].isin(dn)]
        if mitigation is not None:
            ms = mitigation if isinstance(mitigation, (list, tuple)) else [mitigation]
            arms = arms[arms["mitigation"].isin([getattr(m, "label", m) or "none" for m in ms])]
        if mode is not None:
            arms = arms[arms["mode"] == mode]
        return arms

    def _draw(self, ax, arms, metric, resolution, floor) -> None:
        import matplotlib.pyplot as plt

        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (_, arm) in enumerate(arms.iterrows()):
            c = self.curve(arm["dtype"], arm["mitigation"], arm["mode"])
            c = c[c["status"] == "ok"] if "status" in c else c
            if c.empty:
                continue
            col = colors[i % len(colors)]
            label = f"{arm['dtype']}" + (" (round fp32)" if arm["mode"] == "round" else "") + \
                ("" if arm["mitigation"] == "none" else f", {arm['mitigation']}")
            x = c["n"].to_numpy()
            if metric == "head":
                y, fl, res = c["head_mean"].to_numpy(float), c["floor_head"].to_numpy(float), c["ulp_z"]
                ax.fill_between(x, c["head_min"].to_numpy(float), c["head_max"].to_numpy(float),
                                color=col, alpha=0.18, linewidth=0)
            else:
                y = c[metric].to_numpy(float)
                fl = c["floor_l2"].to_numpy(float) if metric != "linf" else c["floor_linf"].to_numpy(float)
                if metric == "rel":
                    fl = fl / c["norm_y"].to_numpy(float)
                res = c["ulp_y"] if metric != "rel" else c["eps"]
            ax.plot(x, y, "-o", ms=2.5, color=col, label=label)
            ff = c["floor_factor"].to_numpy(float)
            below = ~np.isfinite(y)
            if floor and np.isfinite(fl).any():
                ax.plot(x, fl * ff, "--", color=col, lw=0.7, alpha=0.5)
            if below.any():
                ax.plot(x[below], np.where(np.isfinite(fl[below] * ff[below]) & (fl[below] > 0),
                                           fl[below] * ff[below], np.nan), "v", mfc="none", color=col)
            if resolution and np.isfinite(res).any():
                ax.axhline(float(np.nanmedian(res)), color=col, ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("n (items in v)")
        ax.set_ylabel({"head": "last-layer head distance ‖z(v)−z(v*)‖", "l2": "‖y_n(v) − y_n+1(v*)‖₂",
                       "linf": "‖y_n(v) − y_n+1(v*)‖∞", "rel": "relative L2"}[metric])
        fam = self.meta.get("family", {}).get("name", "")
        ax.set_title(f"{self.meta.get('model', '')} · {fam} ({self.meta.get('level', '')} level)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


# ------------------------------------------------------------------------------------
class _MemoryStore:
    """RowStore's interface without a directory (out=None)."""

    def __init__(self):
        self._rows: list[dict] = []

    def run(self, items, compute, *, desc="", progress=True):
        from tqdm.auto import tqdm

        for it in tqdm(list(items), desc=desc, disable=not progress, leave=False):
            out = compute(it)
            for row in [out] if isinstance(out, dict) else list(out):
                self._rows.append({**it, **row})
        return pd.DataFrame(self._rows)


def _versions() -> dict[str, str]:
    from .._fastpath import versions

    return versions()


def _every(lengths: list[int], spec, what: str) -> set[int]:
    if spec in (None, False, 0, "none"):
        return set()
    if spec == "all":
        return set(lengths)
    if spec == "ends":
        return {lengths[0], lengths[-1]}
    if isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
        return set(lengths[::spec]) | {lengths[-1]}
    raise GlassesError(f"{what} is 'ends', 'all', 'none' or a positive step, not {spec!r}")


def _fill_bracketing(n: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where ``v`` is NaN, the larger of the nearest measured values below and above in n."""
    out = v.copy()
    have = np.isfinite(v)
    if not have.any() or have.all():
        return out
    ns, vs = n[have], v[have]
    for i in np.where(~have)[0]:
        lo = vs[ns < n[i]]
        hi = vs[ns > n[i]]
        cands = ([lo[-1]] if len(lo) else []) + ([hi[0]] if len(hi) else [])
        out[i] = max(cands)
    return out


_ARM = ["dtype", "mode", "mitigation"]


def derive_reported(df: pd.DataFrame) -> pd.DataFrame:
    """From the measured columns of sweep rows, the floors and the reported columns.

    The shift floor, measured at a subset of lengths, is filled in for the other rows
    of the same arm with the larger of the nearest measured values (``floor_shift_filled``).
    A value within ``floor_factor`` × its floor becomes NaN (``below_floor`` for y).
    """
    if df.empty or "l2_measured" not in df:
        return df
    df = df.sort_values(_ARM + ["n"], kind="stable").reset_index(drop=True).copy()
    for c in ("noise_shift_l2", "noise_shift_linf", "noise_shift_head", "noise_batch_l2",
              "noise_l2", "noise_linf", "noise_head"):
        if c not in df:
            df[c] = np.nan
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["floor_shift_filled"] = False
    for _, idx in df.groupby(_ARM, sort=False).groups.items():
        idx = list(idx)
        n = df.loc[idx, "n"].to_numpy(float)
        measured = np.isfinite(df.loc[idx, "noise_shift_l2"].to_numpy(float))
        for c in ("noise_shift_l2", "noise_shift_linf", "noise_shift_head"):
            df.loc[idx, c] = _fill_bracketing(n, df.loc[idx, c].to_numpy(float))
        df.loc[idx, "floor_shift_filled"] = ~measured & np.isfinite(df.loc[idx, "noise_shift_l2"].to_numpy(float))
        # per-layer shift floors: fill whole lists from the bracketing rows
        if "noise_shift_layer" in df:
            lists = list(df.loc[idx, "noise_shift_layer"])
            arr = [np.asarray(x, float) if isinstance(x, (list, np.ndarray)) and len(x) else None for x in lists]
            ok = [i for i, a in enumerate(arr) if a is not None]
            if ok:
                for i, a in enumerate(arr):
                    if a is None:
                        lo = [j for j in ok if n[j] < n[i]]
                        hi = [j for j in ok if n[j] > n[i]]
                        c = [arr[lo[-1]]] if lo else []
                        c += [arr[hi[0]]] if hi else []
                        arr[i] = np.maximum.reduce(c)
                df["noise_shift_layer"] = df["noise_shift_layer"].astype(object)
                for k, i in enumerate(idx):
                    df.at[i, "noise_shift_layer"] = [float(x) for x in arr[k]]
    ff = pd.to_numeric(df["floor_factor"], errors="coerce").fillna(2.0).to_numpy(float)
    fl2 = np.fmax(np.fmax(df["noise_l2"].to_numpy(float), df["noise_shift_l2"].to_numpy(float)),
                  df["noise_batch_l2"].to_numpy(float))
    flinf = np.fmax(df["noise_linf"].to_numpy(float), df["noise_shift_linf"].to_numpy(float))
    fhead = np.fmax(df["noise_head"].to_numpy(float), df["noise_shift_head"].to_numpy(float))
    df["floor_l2"], df["floor_linf"], df["floor_head"] = fl2, flinf, fhead

    def within(x, f):
        x = pd.to_numeric(x, errors="coerce").to_numpy(float)
        return np.isfinite(f) & (x <= ff * f)

    below = within(df["l2_measured"], fl2)
    ok = (df["status"] == "ok").to_numpy() if "status" in df else np.ones(len(df), bool)
    df["below_floor"] = below & ok
    for rep, meas, f in (("l2", "l2_measured", fl2), ("rel", "rel_measured", fl2)):
        v = pd.to_numeric(df[meas], errors="coerce").to_numpy(float)
        df[rep] = np.where(below | ~ok, np.nan, v)
    v = pd.to_numeric(df["linf_measured"], errors="coerce").to_numpy(float)
    df["linf"] = np.where(below | within(df["linf_measured"], flinf) | ~ok, np.nan, v)
    for stat in ("head_mean", "head_min", "head_max"):
        v = pd.to_numeric(df[f"{stat}_measured"], errors="coerce").to_numpy(float)
        df[stat] = np.where(within(df[f"{stat}_measured"], fhead) | ~ok, np.nan, v)

    def layer_row(r):
        meas = r.get("per_layer_measured")
        if not isinstance(meas, (list, np.ndarray)) or not len(meas):
            return [], []
        a = r.get("noise_layer")
        b = r.get("noise_shift_layer")
        a = np.asarray(a, float) if isinstance(a, (list, np.ndarray)) and len(a) else np.full(len(meas), np.nan)
        b = np.asarray(b, float) if isinstance(b, (list, np.ndarray)) and len(b) else np.full(len(meas), np.nan)
        f = np.fmax(a, b)
        m = np.asarray(meas, float)
        rep = np.where(np.isfinite(f) & (m <= r.get("floor_factor", 2.0) * f), np.nan, m)
        return [float(x) for x in rep], [float(x) for x in f]

    pl = [layer_row(r) for r in df.to_dict("records")]
    df["per_layer"] = [x[0] for x in pl]
    df["per_layer_floor"] = [x[1] for x in pl]
    first = ["n", "dtype", "mode", "mitigation", "n_tokens_a", "n_tokens_b", "status", "l2", "rel", "linf",
             "head_mean", "head_min", "head_max", "bitwise_equal", "same_argmax", "next_token_tv",
             "below_floor", "floor_l2", "floor_linf", "floor_head", "eps", "ulp_y", "ulp_z", "norm_y"]
    cols = [c for c in first if c in df] + [c for c in df.columns if c not in first]
    return df[cols]


def collapse_sweep(
    model,
    family,
    lengths,
    *,
    dtypes: Iterable[torch.dtype | str] = (torch.float32,),
    mitigations: Iterable[Any] = (),
    level: str = "item",
    seed: int = 0,
    round_to: Iterable[torch.dtype | str] = (),
    max_tokens: dict | None = None,
    models: dict | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    attn_impl: str = "auto",
    layers: bool = True,
    heads: str | bool = "last",
    floor_factor: float = 2.0,
    shift_floor: Any = 4,
    batch_floor: Any = "ends",
    prepend_bos: bool | None = None,
) -> "CollapseResult":
    """Sweep a family's pairs (v, v*) over ``lengths`` (numbers of items) × ``dtypes``
    × (baseline + ``mitigations``), one row each.

    * ``family``: a name (``"ones"``, ``"digits_end_one"``, ``"copy_last"``), a template
      with a ``{seq}`` slot, or a :class:`~tl_glasses.tasks.families.SequenceFamily`;
      ``level``: ``"item"`` or ``"token"`` (see :mod:`tl_glasses.tasks.families`).
    * ``dtypes``: real runs with the model cast to each dtype (embedded models are
      reloaded in it; ``models={dtype: model}`` supplies your own).
    * ``round_to``: also the estimate "float32 representations rounded to D"
      (``mode="round"``; float32 runs are added if needed).
    * ``max_tokens``: ``{dtype: N}`` skips native runs longer than N tokens (real float16
      on a CPU is ~100x slower than float32: cap it, and read the round estimate beyond).
    * ``mitigations``: values or spec strings ("separators:3", "sliding_window:64",
      "global_attention", "prompt_structure:question_first"), each measured side by
      side with the baseline ("none").
    * noise floors: the shared-prefix floor on every row (free); the shift floor (one
      extra forward, rotary models) every ``shift_floor``-th length (1 = every row;
      "ends"; "none") and the batch floor at ``batch_floor`` lengths; see
      :func:`derive_reported`.
    * ``out``: a directory; rows are appended as produced (SIGKILL-safe) and a rerun with
      the same directory resumes. The finished result is also saved there.
    """
    from ..interventions import as_mitigation
    from ..models import model_info
    from ..sweeps import RowStore
    from ..tasks.families import get_family

    require_eval(model)
    fam = get_family(family)
    lengths = parse_lengths(lengths)
    native = [_dtype(d) for d in dtypes]
    rounds = [_dtype(d) for d in round_to]
    if rounds and torch.float32 not in native:
        native.insert(0, torch.float32)
    native = list(dict.fromkeys(native))
    if not native:
        raise GlassesError("dtypes is empty; give at least one dtype, e.g. dtypes=['fp32']")
    arms: dict[str, Any] = {"none": None}
    for m in mitigations:
        mm = as_mitigation(m)
        if mm is not None:
            arms[mm.label] = mm
    caps = {_dtype(k): int(v) for k, v in (max_tokens or {}).items()}
    user_models = {_dtype(k): v for k, v in (models or {}).items()}
    for d, um in user_models.items():
        if model_dtype(um) != d:
            raise GlassesError(f"models[{dtype_name(d)}] is a {dtype_name(model_dtype(um))} model")
    shift_at = _every(lengths, shift_floor, "shift_floor")
    batch_at = _every(lengths, batch_floor, "batch_floor")
    info = model_info(model)
    model_name = info.get("name") or getattr(model.cfg, "model_name", None) or type(model).__name__
    config = dict(
        analysis="collapse_sweep", model=model_name, model_hf=info.get("hf_id"),
        model_dtype=dtype_name(model_dtype(model)), family=fam.config(), level=level, seed=seed,
        prepend_bos=prepend_bos, attn_impl=attn_impl, layers=bool(layers), heads=heads,
        floor_factor=floor_factor, shift_floor=str(shift_floor), batch_floor=str(batch_floor),
    )

    # the pairs (tokenisation only, checked), per arm and length
    pairs: dict[tuple[str, int], Any] = {}
    for label, mit in arms.items():
        tr = [mit] if mit is not None and mit.has_transform else []
        for n in lengths:
            pairs[(label, n)] = fam.pair(model, n, level=level, seed=seed, transforms=tr,
                                         prepend_bos=prepend_bos)

    from .._memory import guard as _memory_guard  # refuse before running what cannot fit

    _memory_guard(model, max(p.n_tokens_b for p in pairs.values()), what="collapse_sweep",
                  logits="none", bytes_per_el=max(d.itemsize for d in native))

    items = []
    for d in native:
        for label in arms:
            for n in lengths:
                if d in caps and pairs[(label, n)].n_tokens_b > caps[d]:
                    continue
                items.append(dict(n=n, dtype=dtype_name(d), mode="native", mitigation=label))
                if d == torch.float32:
                    for r in rounds:
                        items.append(dict(n=n, dtype=dtype_name(r), mode="round", mitigation=label))

    current: dict[str, Any] = {}
    fp32_caps: dict[tuple[str, int], tuple] = {}
    probes: dict[int, LastTokenProbe] = {}

    def get_model(d: torch.dtype):
        if d == model_dtype(model):
            return model
        if d in user_models:
            return user_models[d]
        if current.get("dtype") != d:
            current.clear()
            current.update(dtype=d, model=model_for_dtype(model, d))
        return current["model"]

    def measure(d: torch.dtype, label: str, n: int):
        m = get_model(d)
        pr = pairs[(label, n)]
        dev = next(m.parameters()).device
        ta, tb = pr.a[None].to(dev), pr.b[None].to(dev)
        if id(m) not in probes:
            probes[id(m)] = LastTokenProbe(m, layers=layers, heads=heads)
        pb = probes[id(m)]
        ca, cb, p = _run_pair(m, ta, tb, pb, mitigation=arms[label], attn_impl=attn_impl)
        cs = None
        if n in shift_at and ca.finite():
            cs = _run_shifted(m, ta, pb, mitigation=arms[label], attn_impl=attn_impl)
        return m, ta, tb, pb, ca, cb, cs, p

    def compute(item: dict) -> dict:
        t0 = time.perf_counter()
        n, label, mode, d = item["n"], item["mitigation"], item["mode"], _dtype(item["dtype"])
        pr = pairs[(label, n)]
        mit = arms[label]
        base = dict(n_tokens_a=pr.n_tokens_a, n_tokens_b=pr.n_tokens_b, family=fam.name, level=level,
                    status="ok", floor_factor=floor_factor,
                    mitigation_active=None if mit is None else mit.active_at(model, pr.n_tokens_b))
        if mode == "native":
            m, ta, tb, pb, ca, cb, cs, p = measure(d, label, n)
            if d == torch.float32 and rounds:
                fp32_caps.clear()
                fp32_caps[(label, n)] = (ca, cb, cs, p)
        else:
            if (label, n) not in fp32_caps:  # resumed after the float32 row was written
                _, _, _, _, ca, cb, cs, p = measure(torch.float32, label, n)
                fp32_caps.clear()
                fp32_caps[(label, n)] = (ca, cb, cs, p)
            ca, cb, cs, p = fp32_caps[(label, n)]
            m = ta = tb = pb = None
        if not (ca.finite() and cb.finite()):
            where = _check_finite(m, ta, tb, ca, cb) if m is not None else "the float32 run"
            return dict(base, status=f"nonfinite at {where}", bitwise_equal=False,
                        seconds=time.perf_counter() - t0)
        if mode == "round":
            ca, cb, cs = ca.to(d), cb.to(d), (None if cs is None else cs.to(d))
        res = _compare(ca, cb, pr.n_tokens_a, pr.n_tokens_b, p, dtype=d, mode=mode,
                       floor_factor=floor_factor, shifted=cs)
        if mode == "native" and n in batch_at:
            res.noise_batch_l2 = _batch_floor(m, ta, tb, pb, ca, cb, mitigation=mit, attn_impl=attn_impl)
        row = res.raw_row()
        row.update(base, seconds=time.perf_counter() - t0)
        return row

    if out is None:
        store: Any = _MemoryStore()
    else:
        store = RowStore(out, config, key=["n", "dtype", "mode", "mitigation"])
    try:
        df = store.run(items, compute, desc=f"collapse {fam.name}", progress=progress)
    finally:
        current.clear()
        fp32_caps.clear()
    wanted = {(i["n"], i["dtype"], i["mode"], i["mitigation"]) for i in items}
    if not df.empty:
        df = df[[(r["n"], r["dtype"], r["mode"], r["mitigation"]) in wanted for r in df.to_dict("records")]]
    df = derive_reported(df)
    meta = dict(
        config, lengths=lengths, dtypes=[dtype_name(d) for d in native], round_to=[dtype_name(d) for d in rounds],
        mitigations=list(arms), mitigation_configs={k: (v.config() if v is not None else None)
                                                   for k, v in arms.items()},
        max_tokens={dtype_name(k): v for k, v in caps.items()}, versions=_versions(),
        notes=("mode='round' rows are an estimate: float32 representations rounded to the dtype after the "
               "fact, not a run in that dtype. Distances within floor_factor x the noise floor are NaN "
               "(below_floor=True); *_measured columns keep the raw numbers."),
    )
    res = CollapseResult(df=df, meta=meta)
    if out is not None:
        res.save(out)
    return res
