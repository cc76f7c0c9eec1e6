"""Timing and memory helpers for benchmarks: every figure is a ratio against a bare
forward pass of the same model on the same tokens, measured in the same run."""
from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from typing import Any, Callable

import psutil  # noqa: F401  (optional; see peak_rss)
import torch


def best_of(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def median_of(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class PeakRSS:
    """Peak resident memory (bytes) above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        gc.collect()
        self._proc = psutil.Process(os.getpid())
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        while not self._stop:
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.delta = self.peak - self.base
        return False


def peak_delta(fn: Callable[[], Any]) -> int:
    """Extra resident memory (bytes) at the peak of ``fn()``."""
    with PeakRSS() as m:
        fn()
    return m.delta


def row(name: str, value: float, *, unit: str = "x bare forward", target: str = "", **details) -> dict:
    """One benchmark line: ``value`` is a ratio (or a count with its unit)."""
    return {"benchmark": name, "value": round(float(value), 4), "unit": unit, "target": target,
            **{k: v for k, v in details.items()}}


@torch.no_grad()
def bare_forward(hf_model, tokens: torch.Tensor):
    """The baseline: the plain transformers model's forward, logits and all."""
    return hf_model(tokens).logits
