"""Synthetic lab benchmarks. The baseline is a bare forward of a plain transformers
Llama of the same shape (layers, width, heads, MLP width; eager attention) on the
same tokens, in the same run: the SyntheticDecoder should cost about as much, its
cache and fast path less; the theory checks' wall time is reported."""
from __future__ import annotations

import time

import torch
from _timing import bare_forward, best_of, row

from tl_glasses._core import FINAL
from tl_glasses.models import tiny_hf_model
from tl_glasses.synthetic import SyntheticDecoder
from tl_glasses.synthetic.theory import run_check


def run(quick: bool = False) -> list[dict]:
    rows = []
    d, L, H = 64, 2, 4
    hf = tiny_hf_model("llama", n_layers=L, d_model=d, n_heads=H, n_kv_heads=H, d_mlp=4 * d, n_ctx=8192)
    model = SyntheticDecoder("rope", n_layers=L, d_model=d, n_heads=H, n_ctx=8192)
    for n in ([512] if quick else [512, 2048]):
        toks = torch.randint(4, 100, (1, n))
        with torch.no_grad():
            t_hf = best_of(lambda: bare_forward(hf, toks), repeat=3)
            t_m = best_of(lambda: model(toks), repeat=3)
            t_c = best_of(lambda: model.run_with_cache(toks, names_filter=FINAL, return_type=None), repeat=3)
            t_f = best_of(lambda: model(toks, last_query_only=True), repeat=3)
        rows.append(row(f"SyntheticDecoder forward, {n} tokens", t_m / t_hf, target="<= 1.5x",
                        hf_s=round(t_hf, 4)))
        rows.append(row(f"SyntheticDecoder run_with_cache(ln_final.hook_out), {n} tokens", t_c / t_hf,
                        target="<= 1.5x"))
        rows.append(row(f"SyntheticDecoder last_query_only fast path, {n} tokens", t_f / t_hf,
                        target="<= 0.8x (2 layers: the first is full)"))
    one = SyntheticDecoder("rope", n_layers=1, d_model=d, n_heads=1, qkv="sampled", n_ctx=16385)
    hf1 = tiny_hf_model("llama", n_layers=1, d_model=d, n_heads=1, n_kv_heads=1, d_mlp=4 * d, n_ctx=16385)
    n = 4096 if quick else 16384
    toks = torch.randint(4, 100, (1, n))
    with torch.no_grad():
        t_hf = best_of(lambda: bare_forward(hf1, toks), repeat=2)
        t_f = best_of(lambda: one(toks, last_query_only=True), repeat=3)
    rows.append(row(f"1-layer fast path (the collapse checks' unit of work), {n} tokens", t_f / t_hf,
                    target="<= 0.1x", hf_s=round(t_hf, 3)))
    for name in ("softmax-decay", "tv-decay", "fig8", "fig10", "counting-ratio", "counting-precision",
                 "depth-limit"):
        t = time.perf_counter()
        run_check(name, quick=True)
        rows.append(row(f"theory check {name} (--quick)", time.perf_counter() - t, unit="s", target="report"))
    return rows
