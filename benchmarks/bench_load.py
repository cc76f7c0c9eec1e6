"""Foundation benchmarks: cold GGUF load vs cached load; bridge forward vs the plain
transformers forward on the same tokens (eager attention for both)."""
from __future__ import annotations

import os
import tempfile
import time

import torch
from _timing import best_of, row

import tl_glasses as tg
from tl_glasses.models import load_hf


def _load_times(name: str) -> tuple[float, float]:
    old = os.environ.get("TL_GLASSES_CACHE")
    with tempfile.TemporaryDirectory() as d:
        os.environ["TL_GLASSES_CACHE"] = d
        try:
            t = time.perf_counter()
            tg.load_model(name)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            tg.load_model(name)
            cached = time.perf_counter() - t
        finally:
            if old is None:
                os.environ.pop("TL_GLASSES_CACHE", None)
            else:
                os.environ["TL_GLASSES_CACHE"] = old
    return cold, cached


def run(quick: bool = False) -> list[dict]:
    rows = []
    tg.load_model("smollm2-135m")  # warm the imports so the load timings compare loads only
    for name in ["smollm2-135m"] + ([] if quick else ["gemma-3-270m"]):
        cold, cached = _load_times(name)
        rows.append(row(f"{name}: cold GGUF load / cached load", cold / cached, unit="x",
                        target=">= 4x", cold_s=round(cold, 1), cached_s=round(cached, 2)))
    for name in ["smollm2-135m", "gemma-3-270m"]:
        bridge = tg.load_model(name)
        hf, _ = load_hf(name)
        for n in ([256] if quick else [256, 1024]):
            toks = torch.randint(100, 5000, (1, n))
            with torch.no_grad():
                t_hf = best_of(lambda: hf(toks), repeat=3)
                t_br = best_of(lambda: bridge(toks), repeat=3)
            rows.append(row(f"{name}: bridge forward / transformers forward, {n} tokens",
                            t_br / t_hf, target="report", hf_s=round(t_hf, 3)))
        del bridge, hf
    return rows
