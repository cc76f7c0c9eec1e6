"""Over-squashing benchmarks (SmolLM2-135M, fp32, at 256 and 1024 tokens): every
figure is a ratio against a bare forward of the plain transformers model (``load_hf``,
eager attention unless said) on the same tokens, measured in the same run.

* ``sensitivity(method="scalar")``: target ≤ 3x; ``method="hutchinson", probes=8``: ≤ 12x.
* ``method="jacobian"``: reported, and compared with d_model separate backward passes
  sharing one forward (target: ≥ 2x faster), and with d_model separate forward+backward
  passes. Both are extrapolated from timed samples on one kept graph (a full exact
  Jacobian at 1024 tokens is ~500 forward passes of compute): the Jacobian from the
  real routine (``_jacobian_sq``, its default chunk size) run on two chunks' worth of
  the d_model outputs and scaled, the separate passes from the forward plus the median
  of a sample of single backward passes. The Jacobian's graph uses the fused sdpa
  attention, as ``sensitivity`` does when no hook needs patterns; the baseline uses the
  model as loaded (eager), and a third row compares with single passes on the same
  fused graph (the gain of batching alone). ``--quick`` (64 tokens) times the whole
  Jacobian.
* ``path_bound``: ≤ 1.2x the eager forward (capturing patterns needs eager
  attention), also reported against the sdpa forward; the row chain against forming
  the full n×n product from the same captured patterns: ≥ 20x at 1024 tokens.
* ``path_bound`` at 4096 tokens on gemma-3-270m: peak resident memory (this machine
  has 24 GB), full run only.
"""
from __future__ import annotations

import gc
import time

import torch
from _timing import PeakRSS, bare_forward, best_of, row

import tl_glasses as tg
from tl_glasses._core import hooks_context
from tl_glasses.analysis.paths import capture_patterns, full_product, last_row, path_bound
from tl_glasses.analysis.sensitivity import _auto_chunk, _jacobian_chunk, _jacobian_sq, sensitivity
from tl_glasses.models import load_hf


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 20000, (1, n), generator=g)


def _once(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _vjp_timings(model, toks, k: int, sample: int, full: bool, fused: bool = False) -> dict:
    """One forward with the graph kept (the leaf at blocks.0.hook_resid_pre, the target
    ln_final.hook_out at the last position), then on that same graph:

    * ``single``: median time of one plain ``autograd.grad`` with a one-hot cotangent
      (the baseline: d_model separate backward passes sharing this forward);
    * ``jac``: the time of the real exact-Jacobian routine (``_jacobian_sq``, chunks of
      ``k``) on ``m`` of the d_model outputs, m = the whole of d_model when ``full``,
      else 2 chunks (at least 8 outputs); its per-output cost is scaled to d_model.

    ``fused``: build the graph with the fused sdpa attention, as ``sensitivity`` does
    when no hook needs attention patterns; otherwise the bridge's eager attention.
    """
    from contextlib import ExitStack

    from tl_glasses.analysis._fused import fused_attention

    store = {}

    def leaf(t, hook):
        x = t.detach().clone().requires_grad_(True)
        store["x"] = x
        return x

    def cap(t, hook):
        store["y"] = t

    with ExitStack() as stack:
        if fused:
            stack.enter_context(fused_attention(model))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(hooks_context(model, [("blocks.0.hook_resid_pre", leaf), ("ln_final.hook_out", cap)]))
        t0 = time.perf_counter()
        model(toks, return_type=None)
        t_fwd = time.perf_counter() - t0
        y = store["y"][0, -1]
        d = y.numel()
        times = []
        for o in range(sample):
            e = torch.zeros_like(y)
            e[o] = 1
            t0 = time.perf_counter()
            torch.autograd.grad(y, store["x"], grad_outputs=e, retain_graph=True)
            times.append(time.perf_counter() - t0)
        m = d if full else min(d, max(8, 2 * k) // k * k)
        gc.collect()
        t0 = time.perf_counter()
        _jacobian_sq(y[:m], [store["x"]], k)  # retain_graph=False on its last chunk: run last
        t_m = time.perf_counter() - t0
    import statistics

    return dict(graph=t_fwd, single=statistics.median(times[1:] if len(times) > 2 else times),
                jac=t_fwd + t_m * d / m, m=m, d=d)


def _sensitivity_rows(model, hf, toks, t_fwd, quick) -> list[dict]:
    n = toks.shape[1]
    rows = []
    d = int(model.cfg.d_model)
    t = best_of(lambda: sensitivity(model, toks, method="scalar"), repeat=2, warmup=0)
    rows.append(row(f"sensitivity scalar, {n} tokens", t / t_fwd, target="<= 3x"))
    t = best_of(lambda: sensitivity(model, toks, method="hutchinson", probes=8), repeat=2, warmup=0)
    rows.append(row(f"sensitivity hutchinson probes=8, {n} tokens", t / t_fwd, target="<= 12x",
                    chunk=_auto_chunk(model, n, 1, d, 8, 1.5e9)))

    k = _jacobian_chunk(model, n, 1, d, d, 1.5e9)  # what sensitivity(method="jacobian") uses
    # the routine as sensitivity runs it (fused attention: no hook needs patterns) ...
    v = _vjp_timings(model, toks, k, sample=3, full=quick, fused=True)
    # ... and the baseline a user would write: one backward per output on the model as
    # loaded (the bridge's eager attention), sharing one forward
    b = _vjp_timings(model, toks, k, sample=5 if quick else 9, full=False, fused=False)
    t_jac = v["jac"]
    how = ("measured: the whole Jacobian" if v["m"] == d else
           f"forward + {v['m']} of {d} outputs timed through the real routine, scaled to {d}")
    rows.append(row(f"sensitivity jacobian (exact, d_model={d}), {n} tokens", t_jac / t_fwd,
                    target="report", how=how, chunk=k))
    t_sep = b["graph"] + d * b["single"]
    rows.append(row(f"d_model separate backward passes (one shared forward), {n} tokens", t_sep / t_fwd,
                    target="report", how=f"forward + {d} x (one backward, median of a sample)"))
    rows.append(row(f"jacobian speed-up over separate backward passes (one shared forward), {n} tokens",
                    t_sep / t_jac, unit="x", target=">= 2x"))
    t_same = v["graph"] + d * v["single"]
    rows.append(row(f"jacobian speed-up over separate backward passes on the same fused graph, {n} tokens",
                    t_same / t_jac, unit="x", target="report (batching alone)"))
    t_naive = d * (b["graph"] + b["single"])
    rows.append(row(f"jacobian speed-up over d_model separate forward+backward passes, {n} tokens",
                    t_naive / t_jac, unit="x", target="report"))
    return rows


def _path_rows(model, hf, hf_sdpa, toks, t_fwd, quick) -> list[dict]:
    n = toks.shape[1]
    rows = []
    with torch.no_grad():
        t_sdpa = best_of(lambda: bare_forward(hf_sdpa, toks), repeat=3)
    t_pb = best_of(lambda: path_bound(model, toks), repeat=3)
    rows.append(row(f"path_bound (eager capture), {n} tokens", t_pb / t_fwd, target="<= 1.2x",
                    vs="eager forward"))
    rows.append(row(f"path_bound vs the sdpa forward, {n} tokens", t_pb / t_sdpa, target="report",
                    vs="sdpa forward", sdpa_over_eager=round(t_sdpa / t_fwd, 3)))
    pats = capture_patterns(model, toks)
    t_row = best_of(lambda: last_row(pats), repeat=5)
    t_full = best_of(lambda: full_product(pats, dtype=torch.float32), repeat=2)
    rows.append(row(f"row chain vs full n x n product (fp32), {n} tokens", t_full / t_row, unit="x",
                    target=">= 20x" if n >= 1024 else "report", chain_ms=round(1e3 * t_row, 2),
                    full_ms=round(1e3 * t_full, 1)))
    return rows


def _gemma_4096() -> list[dict]:
    gemma = tg.load_model("gemma-3-270m")
    toks = _tokens(4096)
    with PeakRSS() as m:
        t0 = time.perf_counter()
        res = path_bound(gemma, toks)
        t = time.perf_counter() - t0
    rows = [row("gemma-3-270m path_bound at 4096 tokens: peak RSS above baseline", m.delta / 2**30,
                unit="GiB", target="< 24 GiB machine", seconds=round(t, 1),
                pattern_MiB=round(res.meta["pattern_bytes"] / 2**20, 1), banded_layers=res.meta["banded_layers"])]
    del gemma
    gc.collect()
    hf, _ = load_hf("gemma-3-270m")
    with PeakRSS() as m2:
        t_hf = _once(lambda: bare_forward(hf, toks))
    rows.append(row("gemma-3-270m bare eager forward at 4096 tokens: peak RSS above baseline", m2.delta / 2**30,
                    unit="GiB", target="report", seconds=round(t_hf, 1)))
    rows.append(row("gemma-3-270m path_bound / eager forward at 4096 tokens", t / t_hf, target="report"))
    return rows


def run(quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    model = tg.load_model("smollm2-135m")
    hf, _ = load_hf("smollm2-135m", attn_implementation="eager")
    hf_sdpa, _ = load_hf("smollm2-135m", attn_implementation="sdpa")
    rows = []
    for n in ([64] if quick else [256, 1024]):
        toks = _tokens(n)
        with torch.no_grad():
            t_fwd = best_of(lambda: bare_forward(hf, toks), repeat=3)
        rows.append(row(f"bare eager forward (the unit), {n} tokens", 1.0, target="", seconds=round(t_fwd, 3)))
        rows += _path_rows(model, hf, hf_sdpa, toks, t_fwd, quick)
        rows += _sensitivity_rows(model, hf, toks, t_fwd, quick)
        with torch.no_grad():  # the unit again: flag drift from other load during the run
            t_fwd2 = best_of(lambda: bare_forward(hf, toks), repeat=2)
        rows.append(row(f"bare forward drift over the run, {n} tokens", t_fwd2 / t_fwd, unit="x", target="~1"))
    del model, hf, hf_sdpa
    gc.collect()
    if not quick:
        rows += _gemma_4096()
    return rows
