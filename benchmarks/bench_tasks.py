"""Task suites: what batching buys (batched / one-at-a-time, same items, same run) and
what an item costs against a bare forward of the plain transformers model.

    python benchmarks/run.py --only tasks [--quick]
"""
from __future__ import annotations

import os

import torch

from _timing import bare_forward, best_of, row

MODEL = os.environ.get("TL_GLASSES_BENCH_MODEL", "smollm2-135m")


def run(quick: bool = False) -> list[dict]:
    import tl_glasses as tg
    from tl_glasses.models import load_hf
    from tl_glasses.tasks import scoring as S
    from tl_glasses.tasks.evaluate import prepare_item

    model = tg.load_model(MODEL)
    hf, _ = load_hf(MODEL)
    k = 4 if quick else 8
    n = 20 if quick else 50
    new_tokens = 8 if quick else 16
    repeat = 1 if quick else 2
    task = tg.get_task("count_ones_zeros")
    items = task.items([n], n_items=k, seed=0)
    ctx = [prepare_item(model, it, with_prefix=True) for it in items]
    assert len({c.n_tokens for c in ctx}) == 1, "items of one length should tokenise to one length"
    vals = [str(v) for v in task.candidates(n)]
    cands = [S.candidate_token_ids(model, c.text, c.tokens, vals)[0] for c in ctx]
    contexts = [c.tokens for c in ctx]
    prompts = [prepare_item(model, it).tokens for it in items]
    L = contexts[0].shape[-1]

    t_bare = best_of(lambda: bare_forward(hf, contexts[0][None]), repeat=repeat)

    def score(batch, method="auto"):
        return lambda: S.score_candidates(model, contexts, cands, batch_size=batch, method=method)

    t_score_b = best_of(score(k), repeat=repeat)
    t_score_1 = best_of(score(1), repeat=repeat)
    t_cache = best_of(score(k, "cache"), repeat=1, warmup=0)

    def gen(batch):
        return lambda: S.generate_greedy(model, prompts, max_new_tokens=new_tokens, batch_size=batch, stop=None)

    t_gen_b = best_of(gen(k), repeat=repeat)
    t_gen_1 = best_of(gen(1), repeat=repeat)
    same = [g.token_ids for g in gen(k)()] == [g.token_ids for g in gen(1)()]
    common = dict(model=MODEL, items=k, n=n, context_tokens=L, candidates=len(vals), threads=torch.get_num_threads())
    return [
        row("teacher-forced scoring, batched / one at a time", t_score_b / t_score_1, unit="x one-at-a-time",
            target="< 1 (speed-up = 1/value)", speedup=round(t_score_1 / t_score_b, 2), **common),
        row("teacher-forced scoring per item (batched)", t_score_b / k / t_bare, target="~2 (context + tree)",
            **common),
        row("teacher-forced scoring, tree / key-value-cache method", t_score_b / t_cache, unit="x cache method",
            target="< 1", **common),
        row(f"greedy generation ({new_tokens} tokens), batched / one at a time", t_gen_b / t_gen_1,
            unit="x one-at-a-time", target="< 1 (speed-up = 1/value)", speedup=round(t_gen_1 / t_gen_b, 2),
            identical_outputs=same, **common),
        row(f"greedy generation ({new_tokens} tokens) per item (batched)", t_gen_b / k / t_bare,
            target="informative", **common),
    ]


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
