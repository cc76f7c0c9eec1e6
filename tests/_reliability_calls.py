"""Every public analyser as a call on a tiny model (shared by the hygiene and
determinism tests of issue 9)."""
from __future__ import annotations

import tl_glasses as tg

P = "1111111"
Q = "11111111"


def _fresh(tmp, name):
    i = 0
    while (tmp / f"{name}{i}").exists():
        i += 1
    return tmp / f"{name}{i}"


def calls(tmp):
    """name -> f(model) for every public analyser (tiny gemma3: native sliding window)."""
    return {
        "last_token_distance": lambda m: tg.last_token_distance(m, P, Q),
        "collapse_sweep": lambda m: tg.collapse_sweep(m, "ones", [3, 5], progress=False),
        "sensitivity_jacobian": lambda m: tg.sensitivity(m, P, method="jacobian"),
        "sensitivity_hutchinson": lambda m: tg.sensitivity(m, P, method="hutchinson", probes=4, seed=1),
        "sensitivity_scalar": lambda m: tg.sensitivity(m, P, method="scalar"),
        "path_bound": lambda m: tg.path_bound(m, P),
        "depth_profile": lambda m: tg.depth_profile(m, P),
        "patch_exact": lambda m: tg.patch_pair(m, P, Q, sites=("resid_pre", "attn_out")),
        "patch_attribution": lambda m: tg.patch_pair(m, P, Q, method="attribution"),
        "attribution_check": lambda m: tg.attribution_check(m, P, Q),
        "bound_vs_sensitivity": lambda m: tg.bound_vs_sensitivity(m, P, method="scalar", beta="auto"),
        "evaluate_score": lambda m: tg.evaluate(m, "count_ones", [3], n_items=1, progress=False),
        "evaluate_generate": lambda m: tg.evaluate(m, "copy_last", [3], scoring="generate",
                                                   max_new_tokens=2, progress=False),
        "mit_separators": lambda m: tg.collapse_sweep(m, "ones", [4], mitigations=[tg.separators(2)],
                                                      progress=False),
        "mit_sliding_window": lambda m: tg.last_token_distance(m, P, Q, mitigation=tg.sliding_window(3)),
        "mit_global_attention": lambda m: tg.last_token_distance(m, P, Q, mitigation=tg.global_attention()),
        "mit_prompt_structure": lambda m: tg.collapse_sweep(
            m, "copy_last", [4], mitigations=["prompt_structure:question_first"], progress=False),
        # the report's battery (smoke profile, the steps that run on any model); a fresh
        # directory each call, so that nothing is reused from an earlier call
        "report_smoke": lambda m: tg.report(m, _fresh(tmp, "report"), profile="smoke",
                                            steps=["depth", "oversquashing", "attention"], progress=False),
    }
