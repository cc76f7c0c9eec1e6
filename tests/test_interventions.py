"""Mitigations (paper Sec. 4, Fig. 5c,d; App. C.5, C.6): each edit does what it says,
checked against plain transformers models with the same weights, and leaves no hook."""
from __future__ import annotations

import pytest
import torch

import tl_glasses as tg
from tl_glasses._core import hook_snapshot, hooks_context
from tl_glasses.errors import GlassesError, HookError, UnknownNameError
from tl_glasses.interventions import Compose, native_local_layers, parse_mitigation
from tl_glasses.models import tiny_hf_model
from tl_glasses.tasks import prompts
from tl_glasses.tasks.families import get_family

TEXT = "Count: 1111111111111111111111. Done"


def _logits_last(model, toks):
    with torch.no_grad():
        return model(toks)[0, -1]


def _hf_logits_last(hf, toks, **kw):
    with torch.no_grad():
        return hf(toks, **kw).logits[0, -1]


# -- prompt transforms ------------------------------------------------------------------
def test_separators_transform_and_pair(tiny_llama):
    fam = get_family("ones")
    spec = tg.separators(every=3).transform(fam.spec(7))
    assert spec.seq_text == "111,111,1"
    p = fam.pair(tiny_llama, 6, transforms=[tg.separators(3)])
    assert "111,111." in p.text_a and "111,111,1." in p.text_b
    assert len(p.item_positions_a) == 6 and len(p.item_positions_b) == 7
    assert tg.separators(4, ";").label == "separators:4:;"
    with pytest.raises(GlassesError):
        tg.separators(0)
    with pytest.raises(GlassesError):
        tg.separators(3, "")


def test_prompt_structure():
    fam = get_family("copy_last")
    assert tg.prompt_structure("question_first").transform(fam.spec(3)).template == prompts.COPY_TYPE1
    assert tg.prompt_structure("question_last").transform(fam.spec(3)).template == prompts.COPY_TYPE2
    assert tg.prompt_structure("type2").kind == "question_last"
    with pytest.raises(GlassesError, match="copying prompt"):
        tg.prompt_structure("question_first").transform(get_family("ones").spec(3))
    custom = tg.prompt_structure(template="Q? {seq}").transform(get_family("ones").spec(2))
    assert custom.text == "Q? 11"
    with pytest.raises(UnknownNameError):
        tg.prompt_structure("sideways")


# -- sliding window ------------------------------------------------------------------------
def test_sliding_window_matches_native_window():
    """Hooks imposing window 4 on the local layers of a Gemma-3-style model whose native
    window covers everything == transformers running the same weights with a native
    window of 4 on those layers."""
    wide = tg.tiny_model("gemma3", n_layers=3, sliding_window=256)
    ref = tiny_hf_model("gemma3", n_layers=3, sliding_window=4)
    toks = wide.to_tokens(TEXT)
    local, _ = native_local_layers(wide)
    sw = tg.sliding_window(window=4, layers=local)
    with sw.applied(wide):
        got = _logits_last(wide, toks)
    want = _hf_logits_last(ref, toks)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert not torch.allclose(_logits_last(wide, toks), want, atol=1e-3)


def test_sliding_window_changes_output_and_cleans_up(tiny_llama):
    toks = tiny_llama.to_tokens(TEXT)
    snap = hook_snapshot(tiny_llama)
    change = tg.sliding_window(window=3).verify(tiny_llama, toks)
    assert change > 1e-4
    assert hook_snapshot(tiny_llama) == snap
    # the hook list works on its own, with TransformerLens' own context manager
    base = _logits_last(tiny_llama, toks)
    with tiny_llama.hooks(fwd_hooks=tg.sliding_window(3, layers=[0]).hooks(tiny_llama)):
        edited = _logits_last(tiny_llama, toks)
    assert not torch.allclose(base, edited)
    assert hook_snapshot(tiny_llama) == snap
    # a window covering the whole input changes nothing: verify() says so
    with pytest.raises(HookError, match="did not change"):
        tg.sliding_window(window=200).verify(tiny_llama, toks)


def test_sliding_window_discarded_edit_is_an_error(tiny_llama):
    """A bridge that fires hook_attn_scores on a copy (the edit is dropped) must raise,
    not warn: simulated by a later hook that puts the original scores back."""
    toks = tiny_llama.to_tokens(TEXT)
    kept = {}

    def stash(t, hook):
        kept[hook.name] = t.clone()

    def restore(t, hook):
        return kept[hook.name]

    name = "blocks.0.attn.hook_attn_scores"
    hooks = [(name, stash)] + tg.sliding_window(3, layers=[0]).hooks(tiny_llama) + [(name, restore)]
    snap = hook_snapshot(tiny_llama)
    with pytest.raises(HookError, match="did not reach the softmax"):
        with hooks_context(tiny_llama, hooks), torch.no_grad():
            tiny_llama(toks)
    assert hook_snapshot(tiny_llama) == snap


def test_sliding_window_arguments(tiny_llama):
    with pytest.raises(GlassesError, match="at least 1"):
        tg.sliding_window(0)
    with pytest.raises(GlassesError, match="longer than the model's context"):
        tg.sliding_window(10_000).hooks(tiny_llama)
    with pytest.raises(GlassesError, match="out of range"):
        tg.sliding_window(4, layers=[7]).hooks(tiny_llama)
    assert tg.sliding_window(8, layers=[0, 1]).label == "sliding_window:8@0-1"


# -- global attention -------------------------------------------------------------------------
@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_global_attention_matches_wide_window(attn_impl):
    """Lifting the window of native local layers == the same weights with a window that
    covers the input (the layers keep their local rotary base)."""
    local = tg.tiny_model("gemma3", n_layers=3, sliding_window=4)
    ref = tiny_hf_model("gemma3", n_layers=3, sliding_window=256)
    toks = local.to_tokens(TEXT)
    d = tg.last_token_distance(local, toks, toks[:, :-1], mitigation=tg.global_attention(),
                               attn_impl=attn_impl, shift_floor=False)
    with torch.no_grad():
        want = ref.model(toks).last_hidden_state[0, -1]
    assert torch.allclose(d.y_a, want, atol=1e-5 * float(want.norm()), rtol=0)
    plain = tg.last_token_distance(local, toks, toks[:, :-1], attn_impl=attn_impl, shift_floor=False)
    assert not torch.allclose(plain.y_a, want, atol=1e-3)
    assert d.attn_impl == attn_impl


def test_global_attention_checks(tiny_gemma3, tiny_llama):
    assert native_local_layers(tiny_gemma3) == ([0, 1], 8)
    with pytest.raises(GlassesError, match="no native local"):
        tg.global_attention().chosen_layers(tiny_llama)
    with pytest.raises(GlassesError, match="already global"):
        tg.global_attention(layers=[2]).chosen_layers(tiny_gemma3)
    toks = tiny_gemma3.to_tokens(TEXT)
    # hooks without the patch that edits the mask: an error, not a silent no-op
    with pytest.raises(HookError, match="without its patch"):
        with hooks_context(tiny_gemma3, tg.global_attention().hooks(tiny_gemma3)), torch.no_grad():
            tiny_gemma3(toks)
    snap = hook_snapshot(tiny_gemma3)
    pre = [dict(b.attn._forward_pre_hooks) for b in tiny_gemma3.blocks]
    assert tg.global_attention(layers=[0]).verify(tiny_gemma3, toks) > 0
    with pytest.raises(RuntimeError, match="boom"):
        with tg.global_attention().applied(tiny_gemma3):
            raise RuntimeError("boom")
    assert hook_snapshot(tiny_gemma3) == snap
    assert [dict(b.attn._forward_pre_hooks) for b in tiny_gemma3.blocks] == pre
    with pytest.raises(HookError, match="did not change"):  # shorter than the window
        tg.global_attention().verify(tiny_gemma3, tiny_gemma3.to_tokens("123"))


# -- composition and specs ----------------------------------------------------------------------
def test_compose_and_specs(tiny_gemma3):
    m = tg.separators(3) + tg.sliding_window(4, layers=[0])
    assert isinstance(m, Compose) and m.label == "separators:3+sliding_window:4@0"
    assert m.needs_eager and m.has_transform and m.has_model_edits
    assert parse_mitigation("separators:3+sliding_window:4@0").label == m.label
    assert parse_mitigation("global_attention@0-1").label == "global_attention@0-1"
    assert parse_mitigation("prompt_structure:question_last").kind == "question_last"
    assert parse_mitigation("none") is None
    with pytest.raises(UnknownNameError, match="sliding_window"):
        parse_mitigation("slidingwindow:4")
    with pytest.raises(GlassesError):
        parse_mitigation("sliding_window")
    # composed model edits apply together and clean up
    snap = hook_snapshot(tiny_gemma3)
    both = tg.sliding_window(2, layers=[2]) + tg.global_attention()
    assert both.verify(tiny_gemma3, tiny_gemma3.to_tokens(TEXT)) > 0
    assert hook_snapshot(tiny_gemma3) == snap


def test_a_mitigation_says_whether_it_is_active_at_a_length():
    import tl_glasses as tg

    model = tg.load_model("tiny:gemma3")
    sw = tg.sliding_window(8)
    assert sw.active_at(model, 8) is False and sw.active_at(model, 9) is True
    assert tg.separators(every=3).active_at(model, 4) is True
    assert (sw + tg.separators(every=3)).active_at(model, 4) is True
    assert (sw + tg.sliding_window(16)).active_at(model, 12) is True
    assert (sw + tg.sliding_window(16)).active_at(model, 4) is False
