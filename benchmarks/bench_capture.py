"""The capture engine's own cost (SmolLM2-135M, fp32, at 64 and 512 tokens).

What ``tl_glasses.capture.run`` adds to a hooked forward, measured against the same
forward with the same reads attached by hand (``model.hooks`` and a plain call), and
both against a bare forward of the same model, in one process. The three are timed
interleaved, in a rotating order, and each row is the median over rounds of the
per-round ratio: a drift in the machine's speed over the run falls on all three alike,
which separate processes minutes apart (``compare.py``) cannot promise.

* reads of the last position of every layer's residual stream, eager attention, the
  last position's logits: engine / by hand, target ≤ 1.05x;
* the same with the fused (sdpa) kernel (``attn_impl="sdpa"`` against the by-hand
  ``fused_attention`` switch): target ≤ 1.05x;
* stopping after the middle layer's read (``stop=True``) against the by-hand forward
  that runs to the end: reported (below 1 is the saving);
* the engine's own work per call, everything but the forward (backend lookup, the hook
  check, the kernel choice, attaching and removing the hooks), less what the by-hand
  version does outside its forward (attaching and removing the same hooks), as a
  fraction of the bare forward: timed over many calls with a backend whose forward does
  nothing, so it does not share the forward's noise. Target ≤ 0.05 (the 5% budget).
"""
from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch
from _timing import row

import tl_glasses as tg
from tl_glasses.analysis._fused import fused_attention
from tl_glasses.capture import run as capture_run
from tl_glasses.capture._backend import backend_for


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Each round times every function once, the order rotated by one per round."""
    names = list(fns)
    for f in fns.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            times[k].append(_timed(fns[k]))
    return times


def _median_ratio(times, num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


class _NoForward:
    """The model's own backend in every respect except that its forward does nothing."""

    def __init__(self, inner):
        self._inner = inner
        self.name = inner.name + "-noforward"

    def __getattr__(self, k):
        return getattr(self._inner, k)

    def forward(self, model, tokens, *, logits, position_ids, kwargs):
        return None


def _per_call(fn, calls: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def _outside_forward(model, toks, names: list[str], calls: int) -> float:
    """Seconds per call the engine spends outside the forward, beyond the by-hand hooks."""
    hooks = [(nm, lambda t, hook: None) for nm in names]

    def engine():  # the backend is looked up per call, as in a normal run
        capture_run(model, toks, read={nm: -1 for nm in names}, logits=1, attn_impl="eager",
                    backend=_NoForward(backend_for(model)))

    def by_hand():
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            pass

    return statistics.median(_per_call(engine, calls) - _per_call(by_hand, calls) for _ in range(5))


def run(quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    model = tg.load_model("smollm2-135m")
    L = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_post" for i in range(L)]
    rows = []
    for n in ([64] if quick else [64, 512]):
        rounds = 8 if quick else (40 if n <= 64 else 20)
        toks = torch.randint(100, 5000, (1, n))
        kept: dict = {}

        def by_hand(kernel: str, until: int = L):
            hooks = [(nm, lambda t, hook, nm=nm: kept.__setitem__(nm, t[:, -1].detach().clone()))
                     for nm in names[:until]]
            with torch.no_grad(), (fused_attention(model) if kernel == "sdpa" else nullcontext()), \
                    model.hooks(fwd_hooks=hooks):
                model(toks, return_type="logits", logits_to_keep=1)

        def bare():
            with torch.no_grad():
                model(toks, return_type="logits", logits_to_keep=1)

        def engine(kernel: str):
            capture_run(model, toks, read={nm: -1 for nm in names}, logits=1, attn_impl=kernel)

        def engine_stop():
            capture_run(model, toks, read={nm: -1 for nm in names[:L // 2]}, stop=True, attn_impl="eager")

        t = _interleaved({"bare": bare, "hand eager": lambda: by_hand("eager"), "engine eager": lambda: engine("eager"),
                          "hand sdpa": lambda: by_hand("sdpa"), "engine sdpa": lambda: engine("sdpa"),
                          "engine stop": engine_stop}, rounds)
        how = f"median over {rounds} interleaved rounds of the per-round ratio"
        own = _outside_forward(model, toks, names, calls=20 if quick else 100)
        rows += [
            row(f"engine run / the same reads by hand (eager), {n} tokens",
                _median_ratio(t, "engine eager", "hand eager"), unit="x by-hand hooked forward",
                target="≤ 1.05x", how=how),
            row(f"engine run / the same reads by hand (sdpa), {n} tokens",
                _median_ratio(t, "engine sdpa", "hand sdpa"), unit="x by-hand hooked forward",
                target="≤ 1.05x", how=how),
            row(f"engine run, {L} reads, eager, {n} tokens", _median_ratio(t, "engine eager", "bare"),
                target="(reported)", how=how),
            row(f"reads by hand, {L} reads, eager, {n} tokens", _median_ratio(t, "hand eager", "bare"),
                target="(reported)", how=how),
            row(f"engine run stopping after layer {L // 2 - 1} / by hand to the end (eager), {n} tokens",
                _median_ratio(t, "engine stop", "hand eager"), unit="x by-hand hooked forward",
                target="(reported; < 1 is the saving)", how=how),
            row(f"engine's own work outside the forward, beyond the by-hand hooks / bare forward, {n} tokens",
                own / statistics.median(t["bare"]), unit="x bare forward", target="≤ 0.05",
                ms_per_call=round(own * 1e3, 3), how="median of 5 means over many calls, no-op forward"),
        ]
    return rows
