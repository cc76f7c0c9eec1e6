"""Every fast path is checked against the slow exact definition, never against another
fast path (issue 12). Each test forces a fast path to be wrong (monkeypatch) and expects
the next one that agrees with the definition; forcing all of them wrong expects a
FastPathError naming the installed versions."""
from __future__ import annotations

import pytest
import torch

import tl_glasses as tg
from tl_glasses import _fastpath
from tl_glasses.tasks import scoring as S
from tl_glasses.tasks.evaluate import prepare_item

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _item(model, n=4, max_candidate=12):
    t = tg.get_task("count_ones")
    tk = prepare_item(model, t.item(n), with_prefix=True)
    ids, _ = S.candidate_token_ids(model, tk.text, tk.tokens, [str(v) for v in range(max_candidate + 1)])
    return tk.tokens, ids


def _definition(model, toks, ids):
    return S.score_definition(model, toks, ids, terminate=True)


def _break_tree(monkeypatch):
    real = S._tree_masks

    def broken(L, order, index, dtype, device, window):  # every token sees every other
        pos, full, sliding = real(L, order, index, dtype, device, window)
        return pos, torch.zeros_like(full), (None if sliding is None else torch.zeros_like(sliding))

    monkeypatch.setattr(S, "_tree_masks", broken)


def _break_cache(monkeypatch):
    real = S._cache_rows

    def empty(cache, rows):  # the candidates run without their context
        new = real(cache, rows)
        for layer in new.layers:
            layer.keys = layer.keys[..., :0, :]
            layer.values = layer.values[..., :0, :]
        return new

    monkeypatch.setattr(S, "_cache_rows", empty)


def test_the_definition_equals_plain_transformers():
    from tl_glasses.models import tiny_hf_model
    from _task_helpers import reference_scores

    model, hf = tg.tiny_model("llama", seed=3), tiny_hf_model("llama", seed=3)
    toks, ids = _item(model)
    mask = S.digit_continuation_mask(model.tokenizer, hf.config.vocab_size)
    assert torch.allclose(_definition(model, toks, ids), reference_scores(hf, toks, ids, mask), atol=2e-5, rtol=0)


def test_healthy_model_uses_the_tree_checked_once():
    model = tg.tiny_model("llama", seed=4)
    toks, ids = _item(model)
    got = S.score_candidates(model, [toks], [ids])[0]
    assert torch.allclose(got, _definition(model, toks, ids), atol=2e-5, rtol=0)
    log = _fastpath.checks(model)
    assert [(c.path, c.ok) for c in log] == [("tree", True)]
    assert "recompute" in log[0].reference
    S.score_candidates(model, [toks], [ids])
    assert len(_fastpath.checks(model)) == 1, "checked once per model"


def test_wrong_tree_falls_back_to_the_cache(monkeypatch):
    model = tg.tiny_model("llama", seed=3)
    toks, ids = _item(model)
    _break_tree(monkeypatch)
    with pytest.warns(UserWarning, match="does not reproduce the plain recompute"):
        got = S.score_candidates(model, [toks], [ids])[0]
    assert torch.allclose(got, _definition(model, toks, ids), atol=2e-5, rtol=0)
    assert [(c.path, c.ok) for c in _fastpath.checks(model)] == [("tree", False), ("cache", True)]


def test_wrong_cache_is_never_used(monkeypatch):
    """The cache alone (the tree unavailable, as on a model without 4-D masks), wrong:
    'auto' falls back to the recompute only if... no: 'auto' raises, an explicit
    method='cache' raises, and method='recompute' gives the definition."""
    model = tg.tiny_model("llama", seed=5)
    toks, ids = _item(model)
    _break_cache(monkeypatch)
    monkeypatch.setattr(S, "_tree_mask_kind", lambda m: None)
    with pytest.raises(_fastpath.FastPathError, match="transformers"):
        S.score_candidates(model, [toks], [ids], method="cache")
    got = S.score_candidates(model, [toks], [ids], method="recompute")[0]
    assert torch.allclose(got, _definition(model, toks, ids), atol=2e-5, rtol=0)


def test_all_scoring_fast_paths_wrong_raises_with_versions(monkeypatch):
    model = tg.tiny_model("gemma3", seed=3, n_layers=2, sliding_window=8)
    toks, ids = _item(model)
    _break_tree(monkeypatch)
    _break_cache(monkeypatch)
    with pytest.raises(_fastpath.FastPathError) as ei:
        S.score_candidates(model, [toks], [ids])
    msg = str(ei.value)
    import transformers

    assert f"transformers {transformers.__version__}" in msg and "torch" in msg
    assert "tree" in msg and "cache" in msg and "method='recompute'" in msg
    assert [c.ok for c in _fastpath.checks(model)] == [False, False]


def test_window_regimes_are_checked_separately():
    model = tg.tiny_model("gemma3", seed=6, n_layers=2, sliding_window=8)
    short = torch.tensor([1, 5, 6])
    long_, ids = _item(model, n=6)
    assert long_.shape[-1] > 8
    S.score_candidates(model, [short, long_], [ids, ids])
    assert {c.regime for c in _fastpath.checks(model)} == {"all", "beyond window"}


# --- generation ---------------------------------------------------------------------------
def _prompts(model):
    return [model.to_tokens("count: 1 1 1 1")[0], model.to_tokens("count: 1 0 1 1")[0]]


def _greedy_reference(model, prompt, k):
    """The definition: one prompt, one full forward per new token, no cache."""
    toks = prompt.clone()
    with torch.no_grad():
        for _ in range(k):
            nxt = int(model(toks[None])[0, -1].argmax())
            toks = torch.cat([toks, torch.tensor([nxt])])
    return toks[prompt.shape[-1]:].tolist()


def test_healthy_generation_uses_the_cache_and_matches_the_definition():
    model = tg.tiny_model("llama", seed=7)
    prompts = _prompts(model)
    gens = S.generate_greedy(model, prompts, max_new_tokens=6, stop=None)
    assert [(c.kind, c.path, c.ok) for c in _fastpath.checks(model)] == [("generation", "cache", True)]
    for p, g in zip(prompts, gens):
        ref = _greedy_reference(model, p, 6)
        assert g.token_ids == ref[: len(g.token_ids)]


def test_wrong_cached_generation_falls_back(monkeypatch):
    model = tg.tiny_model("llama", seed=7)
    prompts = _prompts(model)
    real = S._forward_with_cache

    def forgetful(m, toks):  # a cache that lost the prompt
        logits, cache = real(m, toks)
        for layer in cache.layers:
            layer.keys = layer.keys[..., -1:, :]
            layer.values = layer.values[..., -1:, :]
        return logits, cache

    monkeypatch.setattr(S, "_forward_with_cache", forgetful)
    with pytest.warns(UserWarning, match="generation fast path cache"):
        gens = S.generate_greedy(model, prompts, max_new_tokens=6, stop=None)
    assert [(c.path, c.ok) for c in _fastpath.checks(model)] == [("cache", False), ("recompute", True)]
    for p, g in zip(prompts, gens):
        assert g.token_ids == _greedy_reference(model, p, 6)[: len(g.token_ids)]

    # both fast paths wrong: batching itself broken (rows see each other's tokens)
    other = tg.tiny_model("llama", seed=8)
    real_logits = S._logits

    def mixed(m, toks, keep=None, **kw):
        out = real_logits(m, toks, keep, **kw)
        return out.flip(0) if out.shape[0] > 1 else out

    monkeypatch.setattr(S, "_logits", mixed)
    prompts2 = [other.to_tokens("a b c d")[0], other.to_tokens("x y z w")[0]]
    with pytest.raises(_fastpath.FastPathError, match="generation"):
        S.generate_greedy(other, prompts2, max_new_tokens=6, stop=None)


# --- fused attention ------------------------------------------------------------------------
def test_wrong_fused_attention_falls_back_to_eager(monkeypatch):
    """The fused kernel is checked against the bridge's eager attention (the definition):
    a fused kernel that computes something else is never used."""
    import torch.nn.functional as F

    from tl_glasses.analysis import _fused

    model = tg.tiny_model("llama", seed=9)
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: 1.5 * real(*a, **k))
    with pytest.warns(UserWarning, match="attention fast path sdpa"):
        assert _fused.fused_supported(model) is False
    assert [(c.kind, c.path, c.ok) for c in _fastpath.checks(model)] == [("attention", "sdpa", False)]
    # analysers then run eager: sensitivity equals its eager result
    a = tg.sensitivity(model, "1 1 1 1 0", attn_impl="auto")
    b = tg.sensitivity(model, "1 1 1 1 0", attn_impl="eager")
    assert a.df.equals(b.df)


def test_healthy_fused_attention_is_checked_once():
    from tl_glasses.analysis import _fused

    model = tg.tiny_model("llama", seed=10)
    assert _fused.fused_supported(model) is True
    assert _fused.fused_supported(model) is True
    assert [(c.path, c.ok) for c in _fastpath.checks(model)] == [("sdpa", True)]


def test_kv_cache_plumbing_removes_its_hooks_on_error():
    from tl_glasses.compat import kv_cache_plumbing

    model = tg.tiny_model("llama", seed=11)
    attn = [b.attn for b in model.blocks]
    before = [len(a._forward_pre_hooks) for a in attn]
    with pytest.raises(RuntimeError, match="boom"):
        with kv_cache_plumbing(model):
            assert [len(a._forward_pre_hooks) for a in attn] == [n + 1 for n in before]
            raise RuntimeError("boom")
    assert [len(a._forward_pre_hooks) for a in attn] == before
    # with the plumbing, a cached step equals the full forward (transformers >= 5.24 passes `cache=`)
    toks = model.to_tokens("1 1 1 0")
    with torch.no_grad(), kv_cache_plumbing(model):
        _, cache = model(toks[:, :-1], return_type="logits_and_cache", use_cache=True)
        step, _ = model(toks[:, -1:], past_key_values=cache, return_type="logits_and_cache")
        full = model(toks)
    assert torch.allclose(step[0, -1], full[0, -1], atol=1e-5)


def test_the_scoring_probe_is_short_however_long_the_context():
    """The check runs on at most PROBE_TOKENS tokens of the shortest context (its start and
    its end), and the scores of the long context still equal the definition on it."""
    model = tg.tiny_model("llama", seed=7)
    toks, ids = _item(model, n=40)
    assert toks.shape[-1] > S.PROBE_TOKENS
    got = S.score_candidates(model, [toks], [ids])[0]
    assert torch.allclose(got, _definition(model, toks, ids), atol=2e-5, rtol=0)
    (check,) = _fastpath.checks(model)
    assert check.ok and f"after {S.PROBE_TOKENS} tokens" in check.detail
    probe = S._probe_context(model, toks, "all")
    assert torch.equal(probe[:8], toks[:8]) and torch.equal(probe[-8:], toks[-8:])


def test_the_beyond_window_probe_stays_beyond_the_window():
    model = tg.tiny_model("gemma3", seed=6, n_layers=2, sliding_window=8)
    long_, ids = _item(model, n=20)
    probe = S._probe_context(model, long_, "beyond window")
    assert 8 < probe.shape[-1] < long_.shape[-1]
    assert S._regimes(model, [probe], [ids]) == {"beyond window": [0]}
    got = S.score_candidates(model, [long_], [ids])[0]
    assert torch.allclose(got, _definition(model, long_, ids), atol=2e-5, rtol=0)
    assert [c.regime for c in _fastpath.checks(model)] == ["beyond window"]
