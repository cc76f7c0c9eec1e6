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

Layout: this module is the sweep; the distance engine and the noise-floor rule are in
:mod:`~tl_glasses.analysis._distance`, the result and its plots in
:mod:`~tl_glasses.analysis._collapse_result`, :func:`model_for_dtype` in
:mod:`tl_glasses.models`. Every name is re-exported here, where it always was.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from .._core import model_dtype, require_eval
from .._vocab import model_name as _model_name
from .._vocab import parse_lengths as _vocab_parse_lengths
from ..errors import GlassesError
from ..models._dtype import model_for_dtype
# re-exported: everything importable from here before the split still is (importing this
# module also registers CollapseResult, so results saved before the split still load)
from ._collapse_result import CollapseResult
from ._distance import (  # noqa: F401
    _DTYPE_NAMES,
    FLOOR_INPUTS,
    FLOOR_OUTPUTS,
    LastTokenDistance,
    _batch_floor,
    _check_finite,
    _common_prefix,
    _compare,
    _diffs,
    _dtype,
    _indexes,
    _nan,
    _pad_id,
    _pos_row,
    _run_pair,
    _run_shifted,
    _ulp,
    apply_floor,
    dtype_name,
    last_token_distance,
    layer_floor,
    layer_reported,
    noise_floor,
)
from ._probe import Capture, LastTokenProbe, is_rotary, run_capture  # noqa: F401

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


# one length grammar for the whole package: tl_glasses._vocab.parse_lengths
parse_lengths = _parse_lengths = _vocab_parse_lengths


# ------------------------------------------------------------------------------------
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
    # the rule itself is apply_floor's (and layer_floor's, layer_reported's): the same
    # code gives LastTokenDistance its reported values
    ff = pd.to_numeric(df["floor_factor"], errors="coerce").fillna(2.0).to_numpy(float)
    ok = (df["status"] == "ok").to_numpy() if "status" in df else np.ones(len(df), bool)
    measured = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in FLOOR_INPUTS if c in df}
    for c, v in apply_floor(measured, ff, ok).items():
        df[c] = v

    def layer_row(r):
        meas = r.get("per_layer_measured")
        if not isinstance(meas, (list, np.ndarray)) or not len(meas):
            return [], []
        a, b = r.get("noise_layer"), r.get("noise_shift_layer")
        a = a if isinstance(a, (list, np.ndarray)) else []
        b = b if isinstance(b, (list, np.ndarray)) else []
        f = layer_floor(a, b, len(meas))
        rep = layer_reported(meas, f, r.get("floor_factor", 2.0))
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
    prefix_cache: bool = False,
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
    * ``prefix_cache``: run the tokens ``v`` and ``v*`` share once, with a key/value cache,
      and each tail from a copy of it (about half the cost of two full forwards at long
      lengths); verified once per model and regime against two full forwards
      (:func:`~tl_glasses.analysis._prefix_cache.prefix_cache_supported`), with fallback to the
      full forwards. Pairs with hooks of a mitigation run in full. Each row's
      ``pair_path`` says which ran; the shared-prefix floor is then the shared token
      computed in the two tails.
    * ``out``: a directory; rows are appended as produced (SIGKILL-safe) and a rerun with
      the same directory resumes. The finished result is also saved there.
    """
    from ..interventions import as_mitigation
    from ..models import model_info
    from ..sweeps import run_rows
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
    model_name = _model_name(model)
    config = dict(
        analysis="collapse_sweep", model=model_name, model_hf=info.get("hf_id"),
        model_dtype=dtype_name(model_dtype(model)), family=fam.config(), level=level, seed=seed,
        prepend_bos=prepend_bos, attn_impl=attn_impl, layers=bool(layers), heads=heads,
        floor_factor=floor_factor, shift_floor=str(shift_floor), batch_floor=str(batch_floor),
    )
    if prefix_cache:  # only when on: directories written before the option still resume
        config["prefix_cache"] = True

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
        ca, cb, p = _run_pair(m, ta, tb, pb, mitigation=arms[label], attn_impl=attn_impl,
                              prefix_cache=prefix_cache)
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
        if prefix_cache:
            row["pair_path"] = ca.path
        return row

    try:
        df = run_rows(items, compute, out=out, config=config, key=["n", "dtype", "mode", "mitigation"],
                      desc=f"collapse {fam.name}", progress=progress)
    finally:
        current.clear()
        fp32_caps.clear()
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
