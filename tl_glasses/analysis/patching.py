"""Activation patching for collapse pairs: where the information that tells ``a`` from
``b`` is carried, and where it is lost.

For a pair ``(a, b)`` — typically ``(v, v*)``, a sequence and the same sequence with
its last item repeated (paper Sec. 4; docs/concepts.md, "Representational collapse") —
:func:`patch_pair` runs ``a`` with one activation (a *site* at one layer, one
position, and for ``z`` one head) replaced by ``b``'s activation at the aligned
position, and reports the fraction of the ``a``–``b`` difference in a metric that the
patch restores::

    restored = (M(a with the patch) - M(a)) / (M(b) - M(a))

0 means the activation carries none of the difference, 1 all of it. Two methods:

* ``method="exact"``: real patches, one forward per cell, batched over cells where
  batching leaves the numbers bitwise unchanged (checked on every batch: each batch
  carries an unpatched copy of ``a`` that must reproduce the single run bit for bit,
  otherwise the batch is rerun one cell at a time);
* ``method="attribution"``: attribution patching, the first-order estimate
  ``grad_act M(a) · (act_b - act_a)`` of every cell at once, from one forward and one
  backward on ``a`` and one forward on ``b``. :func:`attribution_check` reports its
  correlation with exact patching on the same pair.

Everything is computed at the *last* position's final normalised representation
``y`` (``ln_final.hook_out``, what the unembedding reads): a run stops right after the
final norm, so no 262k-row unembedding is paid per patch.

Positions of ``a`` and ``b`` are aligned explicitly (:func:`align_pair`): the shared
token prefix from the start, everything after it from the end, so the last position
of ``a`` always meets the last position of ``b`` and a repeated item leaves exactly its
copy unmatched. The alignment is part of the result (``result.alignment``).

Layout: this module is :func:`patch_pair` and what checks its arguments; the sites and
the metric registry are in :mod:`~tl_glasses.analysis._patch_metrics`, the runs and the
exact / attribution engines in :mod:`~tl_glasses.analysis._patch_run`, the alignment in
:mod:`~tl_glasses.analysis._patch_align`, the results and their plots in
:mod:`~tl_glasses.analysis._patch_results`. Every name is re-exported here, where it
always was.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .._core import (
    FINAL,
    as_tokens,
    check_hooks,
    model_dtype,
    n_heads,
    n_layers,
    require_eval,
)
from ..errors import GlassesError, HookError, UnknownNameError
from ._patch_align import Alignment, align_pair
# re-exported: every name importable from here before the split still is (importing this
# module also registers PatchResult and AttributionCheck, so saved results still load)
from ._patch_metrics import (  # noqa: F401
    _METRIC_BUILDERS,
    DEFAULT_SITES,
    METRICS,
    SITES,
    _build_metric,
    _final_distance,
    _final_projection,
    _full_logits,
    _hook_name,
    _logit_diff,
    _logits_of,
    _Metric,
    _single_token,
    _unembed_rows,
    list_metrics,
    register_metric,
)
from ._patch_results import AttributionCheck, PatchResult, correlations
from ._patch_run import (  # noqa: F401
    _as_list,
    _attribution,
    _Cell,
    _combine,
    _exact,
    _first_order,
    _from_cache,
    _identical,
    _mitigation_name,
    _pair_side_tokens,
    _run_single,
    _run_to_final,
    _setter,
    _user_cache_get,
)

__all__ = [
    "SITES",
    "METRICS",
    "list_metrics",
    "register_metric",
    "Alignment",
    "align_pair",
    "patch_pair",
    "PatchResult",
    "attribution_check",
    "AttributionCheck",
    "patch_hook_names",
    "patch_cache",
]

METHODS = ("exact", "attribution")


# ---------------------------------------------------------------------------------
# the public function
# ---------------------------------------------------------------------------------
def _resolve_sites(sites) -> tuple[str, ...]:
    if isinstance(sites, str):
        sites = (sites,)
    sites = tuple(sites)
    if not sites:
        raise GlassesError("sites is empty; pick from " + ", ".join(SITES))
    for s in sites:
        if s not in SITES:
            raise UnknownNameError("patching site", s, list(SITES))
    if len(set(sites)) != len(sites):
        raise GlassesError(f"sites repeats a name: {sites}")
    return sites


def _resolve_layers(model, layers) -> list[int]:
    return parse_layers(model, layers, allow_empty=True)


def _resolve_positions(positions, al: Alignment) -> list[int]:
    if isinstance(positions, str):
        if positions == "last":
            return [al.a_len - 1]
        if positions == "all":
            return list(al.a_positions)
        raise UnknownNameError("positions", positions, ["last", "all", "<list of a's positions>"])
    if isinstance(positions, int):
        positions = [positions]
    out = []
    for p in positions:
        p = int(p)
        if not -al.a_len <= p < al.a_len:
            raise GlassesError(f"position {p} is outside a's {al.a_len} tokens")
        p %= al.a_len
        if al.b_of(p) is None:
            raise GlassesError(
                f"position {p} of a has no counterpart in b ({al.describe()}); "
                f"matched positions of a: {list(al.a_positions)}"
            )
        out.append(p)
    return sorted(dict.fromkeys(out))


def patch_hook_names(model, sites: Sequence[str] | str = DEFAULT_SITES, layers=None) -> list[str]:
    """The hook names a patching run needs (the sites at the layers, plus the final
    norm): pass them as ``names_filter`` to ``run_with_cache`` to hold only those."""
    sites = _resolve_sites(sites)
    return [_hook_name(s, l) for l in _resolve_layers(model, layers) for s in sites] + [FINAL]


def patch_cache(model, prompt, sites: Sequence[str] | str = DEFAULT_SITES, layers=None, *,
                fwd_hooks: Sequence = ()):
    """``run_with_cache`` holding only the activations a patching run needs (and the
    final norm output), checked: every requested hook must come back, nothing else."""
    require_eval(model)
    names = patch_hook_names(model, sites, layers)
    check_hooks(model, names, purpose="patching")
    toks = as_tokens(model, prompt)
    from ..capture import cache as _cache

    cache = _cache(model, toks, names, fwd_hooks=list(fwd_hooks))
    got = set(cache.keys())
    missing = [n for n in names if n not in got]
    if missing:
        raise HookError(f"run_with_cache did not return {missing}; the hook names resolve differently on this model")
    extra = [k for k in got if k not in set(names)]
    for k in extra:  # aliases a bridge adds (blocks.0.hook_in for hook_resid_pre …)
        try:
            del cache.cache_dict[k]
        except (AttributeError, KeyError):
            pass
    return cache


def _prepare_inputs(model, a, b, mitigation_a, mitigation_b):
    mit_a, mit_b = _combine(_as_list(mitigation_a)), _combine(_as_list(mitigation_b))
    pair = None
    if b is None:
        if hasattr(a, "a") and hasattr(a, "b") and isinstance(getattr(a, "a"), torch.Tensor):
            pair = a
        else:
            raise GlassesError("patch_pair needs two prompts (a, b), or one pair built by a family")
    if pair is not None:
        toks_a = _pair_side_tokens(model, pair, "a", mit_a)
        toks_b = _pair_side_tokens(model, pair, "b", mit_b)
    else:
        if any(m is not None and m.has_transform for m in (mit_a, mit_b)):
            raise GlassesError(
                "prompt mitigations (separators, prompt_structure) rebuild a prompt from its items; "
                "pass a pair built by a family (tl_glasses.get_family('ones').pair(model, n)) "
                "instead of two prompts"
            )
        toks_a, toks_b = a, b
    return as_tokens(model, toks_a), as_tokens(model, toks_b), mit_a, mit_b, pair


def patch_pair(
    model,
    a,
    b=None,
    *,
    sites: Sequence[str] | str = DEFAULT_SITES,
    positions: str | int | Sequence[int] = "last",
    layers: int | Sequence[int] | None = None,
    metric: str | Callable[[torch.Tensor], torch.Tensor] = "final_distance",
    method: str = "exact",
    mitigation_a=None,
    mitigation_b=None,
    mitigation=None,
    cache_a=None,
    cache_b=None,
    answer_tokens: tuple | None = None,
    align: str = "auto",
    joint: bool = False,
    source: str = "b",
    batch_size: int = 8,
    max_runs: int | None = 4096,
    progress: bool = True,
) -> "PatchResult":
    """Patch ``b``'s activations into ``a``'s run, one site × layer × position [× head]
    at a time, and report the fraction of the ``a``–``b`` metric difference each patch
    restores.

    Args:
        model: a TransformerLens model (TransformerBridge from ``tl_glasses.load_model``).
        a, b: prompts (strings or token tensors, used as given), or ``a`` alone as a
            pair built by a family (``tl_glasses.get_family("ones").pair(model, n)``).
        sites: any of ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``,
            ``mlp_out``, ``z`` (per head).
        positions: ``"last"``, ``"all"`` (every position of ``a`` that has a
            counterpart in ``b``) or positions of ``a`` (negative from the end).
        layers: the layers to patch (default all).
        metric: ``"final_distance"`` (‖y − y_b‖ at the last position: restored = 1 −
            ‖y_patched − y_b‖ / ‖y_a − y_b‖), ``"final_projection"`` (projection of
            y − y_a on y_b − y_a, normalised), ``"logit_diff"`` (logit of the token ``b``
            favours minus the token ``a`` favours; ``answer_tokens=(for_b, for_a)`` or, by
            default, the tokens whose logits move most between a and b), or a callable
            ``f(y) -> scalar`` of the last position's final normalised representation.
        method: ``"exact"`` (real patches) or ``"attribution"`` (first-order estimate
            of every patch from one forward + backward on ``a`` and a forward on ``b``).
        mitigation_a, mitigation_b, mitigation: mitigations (``tl_glasses.separators``,
            ``sliding_window``, ``global_attention``, ``prompt_structure``) applied to
            ``a``'s runs, ``b``'s run, or both. Prompt mitigations need a family pair.
        cache_a, cache_b: ``ActivationCache``\\ s (or dicts) you already hold for ``a`` and
            ``b`` (see :func:`patch_cache` / :func:`patch_hook_names` for one holding only
            what is needed). ``b``'s activations are then read from ``cache_b`` (``b`` is
            not rerun); ``cache_a`` is checked against the run of ``a``.
        align: position alignment, see :func:`align_pair`.
        joint: patch every selected cell together in one run (one value).
        source: ``"b"`` (default) or ``"a"``: the null control, patching ``a``'s own
            activations into ``a`` (every effect must be exactly 0).
        batch_size: cells per forward for ``exact`` (each batch is checked to reproduce
            the unbatched run bit for bit, else it is rerun unbatched); 1 = unbatched.
        max_runs: refuse exact runs above this many forwards (None: no limit).
        progress: show a progress bar for exact patching.
    """
    t0 = time.perf_counter()
    require_eval(model)
    if method not in METHODS:
        raise UnknownNameError("patching method", method, METHODS)
    if source not in ("a", "b"):
        raise UnknownNameError("patching source", source, ["b", "a"])
    if mitigation is not None:
        mitigation_a = _as_list(mitigation_a) + _as_list(mitigation)
        mitigation_b = _as_list(mitigation_b) + _as_list(mitigation)
    sites = _resolve_sites(sites)
    lays = _resolve_layers(model, layers)
    toks_a, toks_b, mit_a, mit_b, pair = _prepare_inputs(model, a, b, mitigation_a, mitigation_b)
    al = align_pair(toks_a[0], toks_b[0], align)
    pos = _resolve_positions(positions, al)
    names = [_hook_name(s, l) for l in lays for s in sites]
    check_hooks(model, names + [FINAL], purpose="patching")
    H = n_heads(model)

    pos_a = torch.tensor(pos, dtype=torch.long)
    pos_b = torch.tensor([al.b_of(p) for p in pos], dtype=torch.long)
    needs_a = {n: pos_a for n in names}
    needs_b = {n: pos_b for n in names}

    # b: activations at the aligned positions and y_b
    if cache_b is not None:
        if mit_b is not None and mit_b.has_model_edits:
            raise GlassesError("mitigation_b edits the model but cache_b is given: the cache fixes b's run; "
                               "build cache_b with the mitigation's hooks instead")
        y_b, acts_b = _from_cache(cache_b, needs_b, int(toks_b.shape[-1]), "cache_b")
    else:
        with torch.no_grad():
            y_b, acts_b = _run_to_final(model, toks_b, [], needs_b, mit_b)
    build = lambda ya: _build_metric(model, metric, ya, y_b[0], answer_tokens)  # noqa: E731
    cells = []
    for s in sites:
        for l in lays:
            for p in pos:
                if SITES[s][1]:
                    cells += [_Cell(s, l, p, h) for h in range(H)]
                else:
                    cells.append(_Cell(s, l, p, None))
    groups = [cells] if joint else [[c] for c in cells]
    info: dict[str, Any] = {}

    if method == "exact":
        # a's plain run: the reference every batch must reproduce bit for bit
        with torch.no_grad():
            y_a, acts_a = _run_to_final(model, toks_a, [], needs_a, mit_a)
        grads = None
    else:
        # the only run of a: one forward + one backward
        y_a, acts_a, grads, met = _attribution(model, toks_a, needs_a, build, mit_a)
    if cache_a is not None:
        y_ca, _ = _from_cache(cache_a, needs_a, int(toks_a.shape[-1]), "cache_a")
        _check_cache_matches(y_ca, y_a)
    src_acts = acts_a if source == "a" else acts_b
    if method == "exact":
        met = build(y_a[0])
    with torch.no_grad():
        m_a = float(met.fn(y_a[0]))
        m_b = float(met.fn(y_b[0]))
    den = m_b - m_a

    if method == "exact":
        # per hook, per a-position: the values to patch in, and a's own
        src = {n: {p: src_acts[n][0, i] for i, p in enumerate(pos)} for n in names}
        own = {n: {p: acts_a[n][0, i] for i, p in enumerate(pos)} for n in names}
        n_runs = sum(1 for g in groups if any(not _identical(src, own, c) for c in g))
        if max_runs is not None and n_runs > max_runs:
            raise GlassesError(
                f"exact patching would take {n_runs} forward passes of a (over max_runs={max_runs}); "
                f"use method='attribution' for all cells at once, restrict positions/layers/sites, "
                f"or pass max_runs=None"
            )
        values, info = _exact(model, toks_a, groups, src, own, met, m_a, y_a, mit_a, batch_size, progress)
        effects = values - m_a
    else:
        eff_by_hook = {n: _first_order(grads[n], src_acts[n][0].to(acts_a[n].device) - acts_a[n][0])
                       for n in names}
        per_cell = []
        for c in cells:
            e = eff_by_hook[c.hook][pos.index(c.position)]
            per_cell.append(float(e[c.head]) if c.head is not None else float(e))
        effects = torch.tensor([sum(per_cell)] if joint else per_cell, dtype=torch.float64)
        values = effects + m_a
        info["runs"] = "1 forward + 1 backward on a, 1 forward on b"
    restored = effects / den + 0.0 if den != 0 else torch.full_like(effects, float("nan"))

    tok_a_str = _str_tokens(model, toks_a[0])
    tok_b_str = _str_tokens(model, toks_b[0])
    rows = []
    if joint:
        one = len(pos) == 1  # several layers/positions in one joint patch: NA (meta lists them)
        rows.append(dict(site="+".join(sites), layer=lays[0] if len(lays) == 1 else pd.NA,
                         position=pos[0] if one else pd.NA,
                         b_position=int(pos_b[0]) if one else pd.NA,
                         from_end=(pos[0] - al.a_len) if one else pd.NA,
                         token=tok_a_str[pos[0]] if len(pos) == 1 else "", head=pd.NA,
                         restored=float(restored[0]), effect=float(effects[0]),
                         patched_metric=float(values[0])))
    else:
        for c, r, e, v in zip(cells, restored.tolist(), effects.tolist(), values.tolist()):
            rows.append(dict(site=c.site, layer=c.layer, position=c.position,
                             b_position=al.b_of(c.position), from_end=c.position - al.a_len,
                             token=tok_a_str[c.position], head=c.head if c.head is not None else pd.NA,
                             restored=r, effect=e, patched_metric=v))
    df = pd.DataFrame(rows)
    for col in ("head", "layer", "position", "b_position", "from_end"):
        df[col] = df[col].astype("Int64")
    df.insert(0, "method", method)

    tensors = {}
    if not joint:
        for s in sites:
            sub = df[df.site == s]
            shape = [len(lays), len(pos)] + ([H] if SITES[s][1] else [])
            for col in ("restored", "effect"):
                tensors[f"{col}.{s}"] = torch.tensor(sub[col].to_numpy(dtype=np.float64)).reshape(shape)
    ynorm = float(torch.linalg.vector_norm(y_b[0].double()))
    dab = float(torch.linalg.vector_norm(y_a[0].double() - y_b[0].double()))
    meta = dict(
        model=_model_name(model), method=method, metric=met.name, metric_info=met.info,
        metric_a=m_a, metric_b=m_b, denominator=den, sites=list(sites), layers=lays, positions=pos,
        n_heads=H, joint=joint, source=source, alignment=al.to_dict(), alignment_text=al.describe(),
        tokens_a=tok_a_str, tokens_b=tok_b_str,
        final_l2_distance=dab, final_rel_distance=dab / ynorm if ynorm else float("nan"),
        near_noise_floor=bool(ynorm and dab / ynorm < 100 * torch.finfo(model_dtype(model)).eps),
        bitwise_equal_final=bool(torch.equal(y_a, y_b)),
        mitigation_a=_mitigation_name(mit_a), mitigation_b=_mitigation_name(mit_b),
        dtype=str(model_dtype(model)), seconds=time.perf_counter() - t0, **info,
    )
    if pair is not None:
        meta["pair"] = dict(family=getattr(pair, "family", None), n=getattr(pair, "n", None),
                            level=getattr(pair, "level", None))
    return PatchResult(df=df, meta=meta, tensors=tensors)


def _check_cache_matches(y_c, y):
    y_c = y_c.to(y.device)
    tol = 1e-5 * (1 + float(y.abs().max()))
    if y_c.shape != y.shape or not torch.allclose(y_c.double(), y.double(), rtol=1e-4, atol=tol):
        diff = float((y_c.double() - y.double()).abs().max()) if y_c.shape == y.shape else float("nan")
        raise GlassesError(
            f"cache_a does not match a's run (final representation differs by {diff:.3g}): was it made "
            f"from the same prompt, model and hooks (mitigation_a)?"
        )


from .._vocab import model_name as _model_name  # noqa: E402
from .._vocab import parse_layers  # noqa: E402
from .._vocab import token_strings as _str_tokens  # noqa: E402


def attribution_check(model, a, b=None, **kwargs) -> AttributionCheck:
    """Run :func:`patch_pair` with ``method="exact"`` and ``method="attribution"`` on the
    same pair and cells (same keyword arguments) and report their correlation."""
    for k in ("method", "joint"):
        if k in kwargs:
            raise GlassesError(f"attribution_check runs both methods cell by cell; do not pass {k}=")
    ex = patch_pair(model, a, b, method="exact", **kwargs)
    at = patch_pair(model, a, b, method="attribution", **kwargs)
    key = ["site", "layer", "position", "head"]
    df = ex.df[key + ["token", "restored"]].rename(columns={"restored": "exact"})
    df["attribution"] = at.df["restored"].to_numpy()
    df["exact_effect"] = ex.df["effect"].to_numpy()
    df["attribution_effect"] = at.df["effect"].to_numpy()
    pear, spear = correlations(df["exact"].to_numpy(float), df["attribution"].to_numpy(float))
    per_site = {}
    for s, sub in df.groupby("site", sort=False):
        p, r = correlations(sub["exact"].to_numpy(float), sub["attribution"].to_numpy(float))
        per_site[s] = dict(pearson=p, spearman=r, n=len(sub))
    meta = {k: v for k, v in ex.meta.items() if k not in ("seconds", "method")}
    meta.update(pearson=pear, spearman=spear, per_site=per_site,
                seconds_exact=ex.meta["seconds"], seconds_attribution=at.meta["seconds"])
    return AttributionCheck(df=df, meta=meta)
