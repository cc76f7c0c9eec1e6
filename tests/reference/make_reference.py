"""Write tests/reference/tiny.json: the numbers today's analysers give on the seeded tiny
models, the frozen reference that tests/test_reference.py holds every later change to
(issue 14: a refactor must reproduce them).

    python tests/reference/make_reference.py          # rewrite (only for a deliberate change; say why in the commit)

Each entry is a list of floats; the test compares with a relative tolerance of 1e-5
(float32 on CPU: a different BLAS kernel can move the last bits, nothing more).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def compute() -> dict[str, list[float]]:
    import torch

    import tl_glasses as tg

    out: dict[str, list[float]] = {}
    for arch in ("llama", "gemma3", "gpt2"):
        torch.manual_seed(0)
        model = tg.load_model(f"tiny:{arch}")
        r = tg.collapse_sweep(model, "ones", [4, 16], progress=False, shift_floor="none", batch_floor="none")
        c = r.curve("float32")
        out[f"{arch}/collapse/l2_measured"] = c["l2_measured"].astype(float).tolist()
        out[f"{arch}/collapse/head_mean_measured"] = c["head_mean_measured"].astype(float).tolist()
        out[f"{arch}/collapse/noise_l2"] = c["noise_l2"].astype(float).tolist()
        prompt = "Consider the sequence 1 1 1 0. What is the last digit?"
        out[f"{arch}/sensitivity/jacobian"] = tg.sensitivity(model, prompt, method="jacobian").values.double().tolist()
        out[f"{arch}/path_bound/beta1"] = tg.path_bound(model, prompt).values.double().tolist()
        out[f"{arch}/depth_profile"] = tg.depth_profile(model, prompt).values.double().tolist()
        p = tg.patch_pair(model, "1 1 1 1 1", "1 1 1 1 1 1", method="exact")
        out[f"{arch}/patch/patched_metric"] = p.df["patched_metric"].astype(float).tolist()
        t = tg.evaluate(model, "copy_last", [3, 6], scoring="score", progress=False)
        out[f"{arch}/tasks/copy_last_logp"] = t.df["logp_answer"].astype(float).tolist()
    return out


if __name__ == "__main__":
    ref = compute()
    (HERE / "tiny.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {len(ref)} entries to {HERE / 'tiny.json'}", file=sys.stderr)
