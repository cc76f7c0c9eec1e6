"""Estimate a run's peak memory *before* running it, and refuse what cannot fit.

The estimate counts the tensors a decoder materialises beyond its weights: per
layer, the eager attention scores and pattern (heads × n² each, plus softmax's
temporary), the residual-stream and MLP activations; the logits; and, when
gradients are needed, every layer's saved activations at once. It is deliberately
simple and slightly pessimistic; ``benchmarks/bench_memory.py`` prints its ratio to
the measured peak on the embedded models (see docs/reliability.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import MemoryBudgetError

__all__ = ["MemoryEstimate", "estimate_run", "available_bytes", "check_fits", "largest_fitting"]


def available_bytes() -> int:
    """Memory this process may still use: what the OS reports available (cgroup-aware
    when a limit is set)."""
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil missing
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = open(path).read().strip()
            if limit.isdigit():
                used_path = path.replace("memory.max", "memory.current").replace("limit_in_bytes", "usage_in_bytes")
                used = int(open(used_path).read().strip())
                avail = min(avail, int(limit) - used)
        except OSError:
            continue
    return avail


def _dims(model) -> dict:
    cfg = model.cfg
    d_model = int(cfg.d_model)
    return dict(
        L=int(cfg.n_layers), H=int(cfg.n_heads), d=d_model,
        d_mlp=int(getattr(cfg, "d_mlp", None) or 4 * d_model),
        V=int(getattr(cfg, "d_vocab", None) or 0),
    )


@dataclass
class MemoryEstimate:
    bytes: int
    detail: dict

    @property
    def gib(self) -> float:
        return self.bytes / 2**30

    def __str__(self) -> str:
        return f"{self.gib:.2f} GiB"


def estimate_run(
    model,
    n_tokens: int,
    *,
    batch: int = 1,
    bytes_per_el: int | None = None,
    grad: bool = False,
    logits: str = "all",
    captured_patterns: int = 0,
) -> MemoryEstimate:
    """Peak extra memory of one run of ``model`` on ``batch`` sequences of ``n_tokens``.

    ``logits``: "all" (every position), "last" or "none"; ``grad``: activations of
    every layer kept for a backward pass; ``captured_patterns``: number of n×n
    matrices an analyser keeps (e.g. one head-reduced pattern per layer)."""
    from ._core import model_dtype

    m = _dims(model)
    b = bytes_per_el or model_dtype(model).itemsize
    n = int(n_tokens)
    attn_layer = batch * m["H"] * n * n * b * 3  # scores, pattern, softmax temporary
    act_layer = batch * n * (m["d"] * 8 + m["d_mlp"] * 4) * b
    vocab_rows = {"all": n, "last": 1, "none": 0}[logits]
    logit_bytes = batch * vocab_rows * m["V"] * max(b, 4) * 2
    if grad:
        layers = m["L"] * (attn_layer * 2 // 3 + act_layer) + attn_layer // 3
    else:
        layers = attn_layer + act_layer
    captured = captured_patterns * n * n * 4
    total = int((layers + logit_bytes + captured) * 1.15)  # allocator slack
    return MemoryEstimate(total, dict(attention_per_layer=attn_layer, activations_per_layer=act_layer,
                                      logits=logit_bytes, captured=captured, grad=grad, n_tokens=n, batch=batch))


def largest_fitting(fn, budget: int, lo: int = 1, hi: int = 1 << 20) -> int:
    """Largest n in [lo, hi] with ``fn(n).bytes <= budget`` (fn increasing in n), or 0."""
    if fn(lo).bytes > budget:
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fn(mid).bytes <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_fits(estimate_fn, n_tokens: int, *, what: str, budget: int | None = None) -> MemoryEstimate:
    """Estimate, compare with the memory available, and refuse with a way out.

    ``estimate_fn(n) -> MemoryEstimate``. ``budget`` defaults to 90 % of the
    available memory; ``TL_GLASSES_MEMORY_BUDGET`` (bytes, or with a G/M suffix)
    overrides it."""
    if budget is None:
        env = os.environ.get("TL_GLASSES_MEMORY_BUDGET")
        budget = _parse_bytes(env) if env else int(available_bytes() * 0.9)
    est = estimate_fn(n_tokens)
    if est.bytes > budget:
        fit = largest_fitting(estimate_fn, budget, hi=max(1, n_tokens))
        raise MemoryBudgetError(
            f"{what} at {n_tokens} tokens needs an estimated {_fmt(est.bytes)}, more than the "
            f"{_fmt(budget)} available; the largest length that fits is about {fit} tokens. "
            f"Use shorter sequences, a smaller batch, or a machine with more memory "
            f"(set TL_GLASSES_MEMORY_BUDGET to override the budget)"
        )
    return est


def _fmt(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _parse_bytes(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def guard(model, n_tokens: int, *, what: str, **estimate_kw) -> MemoryEstimate:
    """The check analysers call before running: :func:`check_fits` with
    :func:`estimate_run` on ``model`` (budget: ``TL_GLASSES_MEMORY_BUDGET`` or 90 % of
    the available memory)."""
    return check_fits(lambda n: estimate_run(model, n, **estimate_kw), int(n_tokens), what=what)
