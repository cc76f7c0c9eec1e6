"""Accuracy of tl_glasses' memory estimate (``_memory.estimate_run``) against the
measured peak resident memory, on smollm2-135m (fp32, CPU): a forward at 512 and 1024
tokens, and a sensitivity backward (one scalar gradient) at 256 tokens.

Each case runs in a fresh subprocess (so that allocator caches of one case do not
hide the next one's peak). ``value`` = estimate / measured peak (≥ 1: pessimistic,
the refusal errs on the safe side).

    nice python benchmarks/bench_memory.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = [("forward", 512), ("forward", 1024), ("sensitivity_backward", 256)]


def _one(kind: str, n: int) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from _timing import PeakRSS

    import tl_glasses as tg
    from tl_glasses._memory import estimate_run

    model = tg.load_model("smollm2-135m")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(100, 40000, (1, n), generator=g)
    if kind == "forward":
        est = estimate_run(model, n, logits="all")
        with torch.no_grad():
            model(tokens[:, :8])  # lazy initialisations out of the way (tiny, not the peak)
            with PeakRSS() as m:
                out = model(tokens)
                del out
    else:
        est = estimate_run(model, n, grad=True, logits="last")
        tg.sensitivity(model, tokens[:, :8], method="scalar")
        with PeakRSS() as m:
            tg.sensitivity(model, tokens, method="scalar")
    return dict(case=kind, n_tokens=n, estimate_mib=round(est.bytes / 2**20, 1),
                measured_mib=round(m.delta / 2**20, 1), ratio=round(est.bytes / max(m.delta, 1), 3))


def run(quick: bool = False) -> list[dict]:
    from _timing import row

    rows = []
    for kind, n in CASES[:1] if quick else CASES:
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        out = subprocess.run([sys.executable, __file__, "--case", kind, str(n)], env=env,
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row(f"memory estimate / peak RSS: {kind} n={n}", r["ratio"], unit="x measured peak",
                        target="1-3x", estimate_mib=r["estimate_mib"], measured_mib=r["measured_mib"]))
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        print(json.dumps(_one(sys.argv[2], int(sys.argv[3]))))
    else:
        sys.path.insert(0, str(HERE))
        for r in run(quick="--quick" in sys.argv):
            print(json.dumps(r))
