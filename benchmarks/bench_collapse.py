"""Cost of a collapse sweep step (both sequences of a pair, float32) against the bare
transformers forward of the same two sequences, in the same run:

* baseline "eager": the plain transformers model (``load_hf``), eager attention,
  full logits — the reference the issue sets (target ≤ 0.6x on gemma-3-270m at 1024
  tokens and on smollm2-135m at 2048 tokens);
* baseline "sdpa": the same with transformers' default fused attention (target
  ≤ 1.2x on smollm2-135m at 2048 tokens);
* peak resident memory of a step against the eager baseline (target ≤ 1.2x).

The step is what :func:`tl_glasses.collapse_sweep` runs per length: two forwards
through the bridge with the last-position probe (y, every resid_post, last-layer
hook_z), logits at the last position only, a fused attention kernel. The position-
shift noise floor adds one more forward of ``v`` on the lengths where it is measured
(every 4th by default): reported as its own row.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

from _timing import PeakRSS, bare_forward, best_of, row

CASES = [("gemma-3-270m", 1024, 0.6, None), ("smollm2-135m", 2048, 0.6, 1.2)]
QUICK = [("gemma-3-270m", 256, 0.6, None), ("smollm2-135m", 512, 0.6, 1.2)]


def _pair(model, n_tokens: int):
    from tl_glasses.tasks.families import get_family

    fam = get_family("ones")
    overhead = fam.pair(model, 1).n_tokens_a - 1
    p = fam.pair(model, max(1, n_tokens - overhead))
    return p.a[None], p.b[None]


def _case(name: str, n_tokens: int, eager_target: float, sdpa_target: float | None, repeat: int,
          *, lean: bool = False) -> list[dict]:
    """``lean``: for a model whose forward at ``n_tokens`` takes minutes — each variant
    run once (after a short warm-up that triggers the one-time kernel checks), its peak
    memory taken in-process around that same run (start the process with
    ``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`` so freed blocks go back to
    the OS and cannot hide a peak), no separate shift-floor timing."""
    if lean:
        return _lean_case(name, n_tokens, eager_target, sdpa_target)
    import tl_glasses as tg
    from tl_glasses.analysis.collapse import _run_pair, _run_shifted
    from tl_glasses.analysis._probe import LastTokenProbe
    from tl_glasses.models import load_hf

    model = tg.load_model(name)
    ta, tb = _pair(model, n_tokens)
    probe = LastTokenProbe(model)

    def step():
        return _run_pair(model, ta, tb, probe)

    def step_floor():
        _run_pair(model, ta, tb, probe)
        _run_shifted(model, ta, probe)

    t_step = best_of(step, repeat=repeat, warmup=1)
    t_floor = best_of(step_floor, repeat=repeat, warmup=0)
    impl = step()[0].attn_impl
    del model
    gc.collect()

    out = []
    hf, _ = load_hf(name, attn_implementation="eager")
    t_eager = best_of(lambda: (bare_forward(hf, ta), bare_forward(hf, tb)), repeat=repeat, warmup=0)
    del hf
    gc.collect()
    hf, _ = load_hf(name, attn_implementation="sdpa")
    t_sdpa = best_of(lambda: (bare_forward(hf, ta), bare_forward(hf, tb)), repeat=repeat, warmup=0)
    del hf
    gc.collect()

    tok = f"{name} @ {ta.shape[-1]}/{tb.shape[-1]} tokens"
    out.append(row(f"collapse step / eager forward, {tok}", t_step / t_eager, target=f"≤ {eager_target}x",
                   seconds_step=round(t_step, 3), seconds_eager=round(t_eager, 3), attn_impl=impl))
    out.append(row(f"collapse step / sdpa forward, {tok}", t_step / t_sdpa,
                   target=f"≤ {sdpa_target}x" if sdpa_target else "(reported)",
                   seconds_step=round(t_step, 3), seconds_sdpa=round(t_sdpa, 3)))
    out.append(row(f"collapse step + shift floor / eager forward, {tok}", t_floor / t_eager,
                   target="(reported; floor every 4th length by default)", seconds=round(t_floor, 3)))
    m_step, m_eager = _peak_in_child("step", name, n_tokens), _peak_in_child("eager", name, n_tokens)
    out.append(row(f"collapse step peak RSS / eager forward peak RSS, {tok}",
                   m_step / max(m_eager, 1), unit="x peak memory", target="≤ 1.2x",
                   step_mb=round(m_step / 2**20, 1), eager_mb=round(m_eager / 2**20, 1)))
    return out


def _lean_case(name: str, n_tokens: int, eager_target: float, sdpa_target: float | None) -> list[dict]:
    import time

    import tl_glasses as tg
    from tl_glasses.analysis._prefix_cache import capture_rel_diff
    from tl_glasses.analysis._probe import LastTokenProbe
    from tl_glasses.analysis.collapse import _run_pair
    from tl_glasses.models import load_hf

    def once(fn):
        gc.collect()
        with PeakRSS() as m:
            t = time.perf_counter()
            out = fn()
            t = time.perf_counter() - t
        return t, m.delta, out

    model = tg.load_model(name)
    ta, tb = _pair(model, n_tokens)
    wa, wb = _pair(model, 64)
    probe = LastTokenProbe(model)
    _run_pair(model, wa, wb, probe)  # one-time set-up (kernel checks) outside the timing
    _run_pair(model, wa, wb, probe, prefix_cache=True)  # and the cached path's check
    t_step, m_step, caps = once(lambda: _run_pair(model, ta, tb, probe))
    t_cached, m_cached, cached = once(lambda: _run_pair(model, ta, tb, probe, prefix_cache=True))
    impl, cached_path = caps[0].attn_impl, cached[0].path
    agree = capture_rel_diff(caps[:2], cached[:2])  # the cached step against the full one, at this length
    del model, caps, cached
    gc.collect()
    base = {}
    for attn in ("eager", "sdpa"):
        hf, _ = load_hf(name, attn_implementation=attn)
        bare_forward(hf, wa)
        base[attn] = once(lambda: (bare_forward(hf, ta), bare_forward(hf, tb)))[:2]
        del hf
        gc.collect()
    tok = f"{name} @ {ta.shape[-1]}/{tb.shape[-1]} tokens"
    (t_eager, m_eager), (t_sdpa, m_sdpa) = base["eager"], base["sdpa"]
    return [
        row(f"collapse step / eager forward, {tok}", t_step / t_eager, target=f"≤ {eager_target}x",
            seconds_step=round(t_step, 3), seconds_eager=round(t_eager, 3), attn_impl=impl, runs=1),
        row(f"collapse step / sdpa forward, {tok}", t_step / t_sdpa,
            target=f"≤ {sdpa_target}x" if sdpa_target else "(reported)",
            seconds_step=round(t_step, 3), seconds_sdpa=round(t_sdpa, 3), runs=1),
        row(f"collapse step peak RSS / eager forward peak RSS, {tok}", m_step / max(m_eager, 1),
            unit="x peak memory", target="≤ 1.2x", step_mb=round(m_step / 2**20, 1),
            eager_mb=round(m_eager / 2**20, 1), sdpa_mb=round(m_sdpa / 2**20, 1), measured="in-process"),
        row(f"collapse step, shared-prefix cache / eager forward, {tok}", t_cached / t_eager,
            target=f"≤ {eager_target}x", seconds_step=round(t_cached, 3), seconds_eager=round(t_eager, 3),
            path=cached_path, rel_diff_vs_full=agree, runs=1),
        row(f"collapse step, shared-prefix cache / sdpa forward, {tok}", t_cached / t_sdpa,
            target=f"≤ {sdpa_target}x" if sdpa_target else "(reported)", seconds_step=round(t_cached, 3),
            seconds_sdpa=round(t_sdpa, 3), path=cached_path, runs=1),
        row(f"collapse step, shared-prefix cache, peak RSS / eager forward peak RSS, {tok}",
            m_cached / max(m_eager, 1), unit="x peak memory", target="≤ 1.2x", step_mb=round(m_cached / 2**20, 1),
            eager_mb=round(m_eager / 2**20, 1), measured="in-process"),
    ]


def _peak_in_child(variant: str, name: str, n_tokens: int) -> int:
    """Extra resident memory at the peak of one call, in a fresh process after the model
    is loaded and warmed up once, with large allocations served by mmap so that memory
    freed by earlier calls cannot hide a peak."""
    # large blocks from mmap, returned to the OS on free: RSS then follows live memory
    env = dict(os.environ, HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    res = subprocess.run([sys.executable, __file__, "--mem", variant, name, str(n_tokens)],
                         capture_output=True, text=True, env=env, check=True)
    return int(json.loads(res.stdout.strip().splitlines()[-1])["delta"])


def _mem_child(variant: str, name: str, n_tokens: int) -> None:
    import tl_glasses as tg
    from tl_glasses.analysis._probe import LastTokenProbe
    from tl_glasses.analysis.collapse import _run_pair
    from tl_glasses.models import load_hf

    model = tg.load_model(name)
    ta, tb = _pair(model, n_tokens)
    if variant == "step":
        probe = LastTokenProbe(model)
        _run_pair(model, ta, tb, probe)  # one-time set-up (kernel check, caches) not counted
        with PeakRSS() as m:
            _run_pair(model, ta, tb, probe)
    else:
        del model
        gc.collect()
        hf, _ = load_hf(name, attn_implementation="eager")
        bare_forward(hf, ta)
        with PeakRSS() as m:
            bare_forward(hf, ta), bare_forward(hf, tb)
    print(json.dumps({"delta": m.delta}))


def run(quick: bool = False) -> list[dict]:
    rows = []
    for name, n, te, ts in (QUICK if quick else CASES):
        rows += _case(name, n, te, ts, repeat=1 if quick else 2)
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--mem":
        _mem_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(r)
