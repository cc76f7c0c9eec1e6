"""Teacher-forced scores equal plain transformers; batched == one at a time (tiny models)."""
from __future__ import annotations

import pytest
import torch

import tl_glasses as tg
from tl_glasses.errors import GlassesError
from tl_glasses.models import tiny_hf_model
from tl_glasses.tasks import scoring as S
from tl_glasses.tasks.evaluate import prepare_item

from _task_helpers import reference_scores

KW = dict(n_layers=3, sliding_window=8)  # contexts are longer than the window: it matters


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["llama", "gemma3", "gpt2"])
def pair(request):
    arch = request.param
    return arch, tg.tiny_model(arch, **KW), tiny_hf_model(arch, **KW)


_REF: dict = {}


def _reference(arch, model, hf):
    """Contexts, candidate ids and plain-transformers scores, computed once per model."""
    if arch not in _REF:
        _, tks, ids = _contexts(model)
        mask = S.digit_continuation_mask(model.tokenizer, hf.config.vocab_size)
        _REF[arch] = tks, ids, [reference_scores(hf, tk.tokens, cid, mask) for tk, cid in zip(tks, ids)]
    return _REF[arch]


def _contexts(model, task="count_ones", ns=(3, 8), max_candidate=12):
    t = tg.get_task(task)
    items = [t.item(n) for n in ns]
    tks = [prepare_item(model, it, with_prefix=True) for it in items]
    vals = [str(v) for v in range(max_candidate + 1)]
    ids = [S.candidate_token_ids(model, tk.text, tk.tokens, vals) for tk in tks]
    assert all(canon for _, canon in ids)
    return items, tks, [i for i, _ in ids]


@pytest.mark.parametrize("method", ["tree", "cache", "recompute"])
def test_scores_equal_plain_transformers(pair, method):
    arch, model, hf = pair
    tks, ids, refs = _reference(arch, model, hf)
    ours = S.score_candidates(model, [tk.tokens for tk in tks], ids, method=method)
    assert tks[0].n_tokens > 2 * KW["sliding_window"]
    for o, ref in zip(ours, refs):
        assert torch.allclose(o, ref, atol=2e-5, rtol=0), (arch, method, (o - ref).abs().max())


def test_evaluate_reports_the_plain_transformers_numbers(pair):
    arch, model, hf = pair
    res = tg.evaluate(model, "count_sum", [4], max_candidate=11, progress=False)
    mask = S.digit_continuation_mask(model.tokenizer, hf.config.vocab_size)
    for it, row in zip(tg.get_task("count_sum").items([4]), res.df.itertuples()):
        tk = prepare_item(model, it, with_prefix=True)
        vals = list(range(12))
        ids, _ = S.candidate_token_ids(model, tk.text, tk.tokens, [str(v) for v in vals])
        ref = reference_scores(hf, tk.tokens, ids, mask)
        best = int(torch.argmax(ref))
        assert row.prediction == vals[best]
        assert abs(row.logp_answer - float(ref[it.answer])) < 2e-5
        wrong = torch.cat([ref[: it.answer], ref[it.answer + 1:]])
        assert abs(row.logit_diff - float(ref[it.answer] - wrong.max())) < 2e-5
        assert row.rank == int((ref >= ref[it.answer]).sum())


def test_without_the_end_term_one_token_margins_are_logit_differences(pair):
    arch, model, hf = pair
    tks, _, _ = _reference(arch, model, hf)
    digits = [[model.tokenizer.convert_tokens_to_ids(str(d))] for d in range(10)]
    ours = S.score_candidates(model, [tks[0].tokens], [digits], terminate=False)[0]
    with torch.no_grad():
        logits = hf(tks[0].tokens[None]).logits[0, -1].double()
    ids = [d[0] for d in digits]
    diff_ours = ours[3] - ours[7]
    assert abs(float(diff_ours - (logits[ids[3]] - logits[ids[7]]))) < 2e-5


def test_batched_scoring_equals_one_at_a_time(pair):
    arch, model, _ = pair
    kw = dict(n_items=4, progress=False, max_candidate=15)
    batched = tg.evaluate(model, "count_ones_zeros", [6], batch_size=8, **kw).df
    single = tg.evaluate(model, "count_ones_zeros", [6], batch_size=1, **kw).df
    assert batched["prediction"].tolist() == single["prediction"].tolist()
    assert batched["rank"].tolist() == single["rank"].tolist()
    assert torch.allclose(torch.tensor(batched["logp_answer"].values), torch.tensor(single["logp_answer"].values),
                          atol=1e-6, rtol=0)


def test_batched_generation_equals_one_at_a_time(pair):
    arch, model, _ = pair
    items = tg.get_task("count_ones_zeros").items([7], n_items=4, seed=2)
    prompts = [prepare_item(model, it).tokens for it in items]
    assert len({p.shape[-1] for p in prompts}) == 1  # one batch
    batched = S.generate_greedy(model, prompts, max_new_tokens=8, batch_size=8, stop=None)
    single = [S.generate_greedy(model, [p], max_new_tokens=8, batch_size=1, stop=None)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    # and the cached decoding equals recomputing every step
    plain = S.generate_greedy(model, prompts[:2], max_new_tokens=8, kv_cache=False, stop=None)
    assert [g.token_ids for g in plain] == [g.token_ids for g in batched[:2]]
    assert all(len(g.token_ids) == 8 or g.stop_reason == "eos" for g in batched)


def test_generation_continues_plain_transformers_argmax(pair):
    arch, model, hf = pair
    it = tg.get_task("copy_last").item(9)
    toks = prepare_item(model, it).tokens
    g = S.generate_greedy(model, [toks], max_new_tokens=6, stop=None)[0]
    seq = toks.tolist()
    with torch.no_grad():
        for t in g.token_ids:
            assert int(hf(torch.tensor([seq])).logits[0, -1].argmax()) == t
            seq.append(t)


def test_candidate_tokens_fall_back_when_the_boundary_merges():
    model = tg.tiny_model("llama")
    toks = model.to_tokens("abc")[0]
    ids, canon = S.candidate_token_ids(model, "abc", toks, ["1", "22"])
    assert canon and ids == [[model.tokenizer.convert_tokens_to_ids("1")], [model.tokenizer.convert_tokens_to_ids("2")] * 2]


def test_argument_errors():
    model = tg.tiny_model("llama")
    toks = model.to_tokens("abc")[0]
    with pytest.raises(GlassesError):
        S.score_candidates(model, [toks], [])
    with pytest.raises(GlassesError):
        S.score_candidates(model, [toks], [[[]]])
    with pytest.raises(GlassesError):
        S.score_candidates(model, [toks], [[[5]]], method="magic")
    with pytest.raises(GlassesError):
        S.generate_greedy(model, [toks], max_new_tokens=0)


def test_digit_mask():
    model = tg.tiny_model("llama")
    mask = S.digit_continuation_mask(model.tokenizer, 104)
    vocab = model.tokenizer.get_vocab()
    assert mask.sum() == 10 and all(mask[vocab[str(d)]] for d in range(10))
    assert not mask[vocab["a"]] and not mask[vocab[" "]]


def test_wilson_interval_equals_scipy():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from scipy.stats import binomtest

    from tl_glasses.tasks.evaluate import wilson_interval

    @settings(max_examples=60, deadline=None)
    @given(n=st.integers(1, 500), frac=st.floats(0, 1))
    def check(n, frac):
        k = int(round(frac * n))
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)

    check()
    assert all(map(lambda v: v != v, wilson_interval(0, 0)))
