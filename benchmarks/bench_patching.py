"""Patching benchmarks on gemma-3-270m, the `ones` pair (v, v*), fp32, eager attention.

Every time is a ratio against the bare forward of the PAIR (a and b, logits and all)
of the plain transformers model (``load_hf``), measured in the same run:

* attribution patching of every layer × position × {resid_pre, attn_out, mlp_out, z
  per head} (one forward + backward on a, one forward on b): target ≤ 4x;
* exact patching of the last position over all layers and the four sites (one
  forward per cell, batched, every batch checked bit for bit): ratio reported, also
  per cell, and batched vs unbatched;
* memory: bytes held by a full ``run_with_cache``, by a cache of only the requested
  sites (``patch_cache``), and by what ``patch_pair`` itself keeps (the patched
  positions only); peak RSS of each run against the bare forward's.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

from _timing import PeakRSS, bare_forward, best_of, row

import tl_glasses as tg
from tl_glasses.analysis.patching import DEFAULT_SITES, patch_cache, patch_pair
from tl_glasses.models import load_hf


def _nbytes(cache) -> int:
    """Bytes of the distinct storages a cache keeps alive (a bridge's cache lists aliases
    such as blocks.0.hook_in / blocks.0.hook_resid_pre that share one tensor)."""
    seen = {}
    for t in cache.values():
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    n = 16 if quick else 200
    model = tg.load_model("gemma-3-270m")
    hf, _ = load_hf("gemma-3-270m")
    pair = tg.get_family("ones").pair(model, n)
    a, b = pair.a[None], pair.b[None]
    tokens = f"{a.shape[-1]}+{b.shape[-1]} tokens"

    def bare():
        bare_forward(hf, a)
        bare_forward(hf, b)

    t_bare = best_of(bare, repeat=3)

    # -- attribution: all layers x positions ---------------------------------------
    res = {}

    def attribution():
        res["r"] = patch_pair(model, pair, method="attribution", positions="all")

    t_attr = best_of(attribution, repeat=2)
    cells = len(res["r"].df)
    t_bare2 = best_of(bare, repeat=2)  # re-measured: the machine is shared; keep the smaller
    t_bare = min(t_bare, t_bare2)
    rows.append(row(f"attribution patching, all {cells} cells (18 layers x positions x 4 sites), {tokens}",
                    t_attr / t_bare, target="≤ 4x", bare_pair_s=round(t_bare, 3), seconds=round(t_attr, 2)))

    # -- exact: last position, all layers ------------------------------------------
    def exact(bs, sites=DEFAULT_SITES):
        res["e"] = patch_pair(model, pair, method="exact", positions="last", sites=sites, batch_size=bs)

    t_exact = best_of(lambda: exact(8), repeat=1, warmup=0)
    e = res["e"]
    rows.append(row(f"exact patching, last position, all layers x 4 sites ({e.meta['runs']} runs, batch 8), {tokens}",
                    t_exact / t_bare, target="report", per_run_x=round(t_exact / t_bare / e.meta["runs"], 3),
                    fallback_batches=e.meta["fallback_batches"], seconds=round(t_exact, 1)))
    t_b = best_of(lambda: exact(8, ("resid_pre",)), repeat=1, warmup=0)
    t_1 = best_of(lambda: exact(1, ("resid_pre",)), repeat=1, warmup=0)
    rows.append(row("exact patching resid_pre x 18 layers: batch 8 / unbatched time", t_b / t_1, unit="x",
                    target="report (< 1 = batching helps)", batched_s=round(t_b, 2), unbatched_s=round(t_1, 2)))

    # -- memory: each in a fresh process (RSS of a long-lived process keeps freed pages) --
    mem = {k: _memory_in_subprocess(k, n) for k in ("bare", "full_cache", "requested_cache",
                                                    "attribution", "exact_last")}
    mb = 1 / 2**20
    rows.append(row(f"full run_with_cache of b: bytes held / requested-sites cache ({tokens})",
                    mem["full_cache"]["held"] / mem["requested_cache"]["held"], unit="x", target="report",
                    full_MB=round(mem["full_cache"]["held"] * mb, 1),
                    requested_MB=round(mem["requested_cache"]["held"] * mb, 1)))
    base = max(mem["bare"]["peak"], 1)
    for k, what in [("full_cache", "full run_with_cache of b"), ("requested_cache", "cache of the 4 requested sites"),
                    ("attribution", "attribution patching, all cells"),
                    ("exact_last", "exact patching, last position (batch 8)")]:
        rows.append(row(f"peak memory: {what} / bare pair forward", mem[k]["peak"] / base, unit="x",
                        target="report", MB=round(mem[k]["peak"] * mb), bare_MB=round(base * mb)))
    held_last = sum(v.numel() * v.element_size() for v in e.tensors.values())
    rows.append(row("exact last-position patching keeps (result tensors)", held_last / 1024, unit="KiB",
                    target="report"))
    return rows


def _memory_in_subprocess(kind: str, n: int) -> dict:
    """Peak RSS above the level after loading, and bytes held, of one operation, measured
    in a fresh interpreter (large allocations mmapped so freed memory leaves RSS)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, __file__, "--memory", kind, str(n)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_child(kind: str, n: int) -> None:
    import torch

    model = tg.load_model("gemma-3-270m")
    pair = tg.get_family("ones").pair(model, n)
    a, b = pair.a[None], pair.b[None]
    hf = load_hf("gemma-3-270m")[0] if kind == "bare" else None
    with torch.no_grad():  # page in every weight (safetensors are memory-mapped) before measuring
        (hf or model)(a[:, :8])
    held = 0
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with PeakRSS() as m:
        if kind == "bare":
            bare_forward(hf, a)
            bare_forward(hf, b)
        elif kind == "full_cache":
            with torch.no_grad():
                _, cache = model.run_with_cache(b)
            held = _nbytes(cache)
        elif kind == "requested_cache":
            cache = patch_cache(model, b, sites=DEFAULT_SITES)
            held = _nbytes(cache)
        elif kind == "attribution":
            patch_pair(model, pair, method="attribution", positions="all")
        elif kind == "exact_last":
            patch_pair(model, pair, method="exact", positions="last", sites=("resid_pre",), batch_size=8)
    print(json.dumps({"peak": m.delta, "held": held}))


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--memory":
    sys.path.insert(0, os.path.dirname(__file__))
    _memory_child(sys.argv[2], int(sys.argv[3]))
