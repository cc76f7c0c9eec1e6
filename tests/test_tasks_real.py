"""Acceptance checks of the task suites on the embedded models (marked ``real``)."""
from __future__ import annotations

import pytest
import torch

import tl_glasses as tg
from tl_glasses.models import load_hf
from tl_glasses.tasks import scoring as S
from tl_glasses.tasks.evaluate import prepare_item, tokenization_report
from tl_glasses.tasks.generators import MODES, TASK_NAMES

from _task_helpers import reference_scores

pytestmark = pytest.mark.real


@pytest.fixture(params=["smollm2-135m", "gemma-3-270m"])
def named(request):
    return request.param, request.getfixturevalue("smollm2" if request.param.startswith("smol") else "gemma")


def test_every_task_is_one_token_per_item(named):
    _, model = named
    for task in TASK_NAMES:
        for mode in MODES:
            if mode == "cot_fewshot" and task.startswith("copy"):
                continue
            rep = tokenization_report(model, task, [5, 60], n_items=2, mode=mode, with_prefix=True)
            assert rep["ok"].all(), rep.loc[~rep["ok"], "message"].tolist()
            assert (rep["n_items"] == rep["n"]).all()


@pytest.mark.parametrize("name,task,n,top", [("smollm2-135m", "count_sum", 6, 12), ("gemma-3-270m", "copy_last", 20, None)])
def test_teacher_forced_logprobs_equal_plain_transformers(name, task, n, top, request):
    model = request.getfixturevalue("smollm2" if name.startswith("smol") else "gemma")
    hf, _ = load_hf(name)
    t = tg.get_task(task)
    opts = {} if top is None else {"max_candidate": top}
    it = t.item(n, **opts)
    tk = prepare_item(model, it, with_prefix=True)
    vals = t.candidates(n, **opts)
    ids, canonical = S.candidate_token_ids(model, tk.text, tk.tokens, [str(v) for v in vals])
    assert canonical
    ours = S.score_candidates(model, [tk.tokens], [ids])[0]
    ref = reference_scores(hf, tk.tokens, ids, S.digit_continuation_mask(model.tokenizer, hf.config.vocab_size))
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()
    res = tg.evaluate(model, task, [n], progress=False, **opts)
    assert abs(res.df["logp_answer"].iloc[0] - float(ref[vals.index(it.answer)])) < 1e-4
    assert res.df["prediction"].iloc[0] == vals[int(ref.argmax())]


def test_batched_generation_equals_one_at_a_time_on_smollm2(smollm2):
    items = tg.get_task("count_ones_zeros").items([8], n_items=3, seed=4)
    prompts = [prepare_item(smollm2, it).tokens for it in items]
    assert len({p.shape[-1] for p in prompts}) == 1
    batched = S.generate_greedy(smollm2, prompts, max_new_tokens=10, batch_size=3)
    single = [S.generate_greedy(smollm2, [p], max_new_tokens=10, batch_size=1)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert all(g.text for g in batched)
