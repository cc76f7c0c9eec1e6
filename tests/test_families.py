"""Sequence families and tokenisation control (paper Sec. 4 "Quantisation and
Tokenisation", App. C.1): items are single tokens, pairs are what they claim."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_glasses as tg
from tl_glasses.errors import GlassesError, TokenizationError, UnknownNameError
from tl_glasses.tasks import prompts
from tl_glasses.tasks.families import (
    PromptSpec,
    SequenceFamily,
    families,
    get_family,
    register_family,
    register_template,
    template_family,
)
from tl_glasses.tasks.tokenization import describe_tokenization, tokenize_items


class _BPEModel:
    """A stand-in model whose tokenizer merges "1"+"1" into "11" (as many BPE vocabs do)."""

    def __init__(self):
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        chars = list("0123456789 ,.:;|abcdefghijklmnopqrstuvwxyzC")
        vocab = {c: i for i, c in enumerate(chars)}
        vocab["11"] = len(vocab)
        tok = Tokenizer(models.BPE(vocab, [("1", "1")]))
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="isolated")
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)

    def to_tokens(self, text, prepend_bos=None, truncate=True):
        return torch.tensor([self.tokenizer(text)["input_ids"]])


def test_registry_lists_and_refuses_unknown():
    assert {"ones", "digits_end_one", "copy_last"} <= set(families())
    with pytest.raises(UnknownNameError) as e:
        get_family("onez")
    assert "ones" in str(e.value) and "copy_last" in str(e.value)
    assert tg.get_family("ones").template == prompts.COUNT_ONES
    assert tg.families() == families()


def test_tokenize_items_positions(tiny_llama):
    r = tokenize_items(tiny_llama, "Count:{seq}.", ["1", "2", "3"], sep=" ")
    assert r.text == "Count:1 2 3."
    # char tokenizer: BOS then one token per character
    assert r.item_positions == [7, 9, 11]
    toks = tiny_llama.to_tokens(r.text)[0]
    assert torch.equal(r.tokens, toks)
    strs = tiny_llama.tokenizer.convert_ids_to_tokens(r.tokens[r.item_positions].tolist())
    assert strs == ["1", "2", "3"]


def test_merge_raises_with_tokens_and_a_separator():
    m = _BPEModel()
    with pytest.raises(TokenizationError) as e:
        tokenize_items(m, "C:{seq}.", ["1"] * 4)
    msg = str(e.value)
    assert "'11'" in msg  # the merged token is shown
    assert "sep=' '" in msg or "sep=','" in msg  # a separator that works is suggested
    r = tokenize_items(m, "C:{seq}.", ["1"] * 4, sep=",")
    assert r.n_items == 4


def test_split_item_raises(tiny_llama):
    with pytest.raises(TokenizationError, match="split over several tokens"):
        tokenize_items(tiny_llama, "{seq}", ["12", "3"])
    with pytest.raises(GlassesError, match="exactly once"):
        tokenize_items(tiny_llama, "no slot", ["1"])


def test_describe_tokenization(tiny_llama):
    df = describe_tokenization(tiny_llama, "a 1")
    assert list(df.columns) == ["position", "id", "token", "piece", "start", "end"]
    assert df["piece"].tolist() == ["", "a", " ", "1"]


@pytest.mark.parametrize("level", ["item", "token"])
def test_pairs_item_and_token_level(tiny_llama, level):
    fam = get_family("ones")
    p = fam.pair(tiny_llama, 6, level=level)
    assert p.n == 6 and len(p.item_positions_a) == 6
    if level == "item":
        assert len(p.item_positions_b) == 7
        assert p.text_b == prompts.COUNT_ONES.replace("{seq}", "1" * 7)
        assert p.n_tokens_b == p.n_tokens_a + 1
        # the closing text follows: b differs from a first at the end of the run of ones
        assert p.common_prefix() == p.item_positions_a[-1] + 1
    else:
        assert torch.equal(p.b[:-1], p.a) and p.b[-1] == p.a[-1]
        assert p.common_prefix() == p.n_tokens_a


def test_digits_end_one_seeded_and_prefix_stable(tiny_llama):
    fam = get_family("digits_end_one")
    s5, s9 = fam.spec(5, seed=3), fam.spec(9, seed=3)
    assert s5.items[-1] == "1" and s9.items[:4] == s5.items[:4]
    assert fam.spec(9, seed=3) == s9 and fam.spec(9, seed=4) != s9
    p = fam.pair(tiny_llama, 9, seed=3)
    assert p.text_b.count("".join(s9.items) + "1") == 1  # ends "…11"


def test_copy_last_and_user_templates(tiny_llama):
    fam = get_family("copy_last", last="0")
    assert fam.template == prompts.COPY and fam.spec(4).items == ("1", "1", "1", "0")
    t = get_family("X {seq} Y")
    assert t.pair(tiny_llama, 3).text_a == "X 111 Y"
    mine = register_template("test_mine_template", "Q: {seq}?", item="2", overwrite=True)
    assert get_family("test_mine_template").spec(2).items == ("2", "2")
    with pytest.raises(GlassesError, match="already registered"):
        register_template("test_mine_template", "Q: {seq}?")
    with pytest.raises(GlassesError, match=r"\{seq\}"):
        template_family("no slot")
    assert isinstance(mine, SequenceFamily)
    with pytest.raises(GlassesError):
        register_family(template_family("A{seq}", name="ones"))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), every=st.integers(1, 7), sep=st.sampled_from(["", " ", ";"]))
def test_item_count_property(n, every, sep):
    """Whatever the grouping, the tokens hold exactly the items the spec claims, in order."""
    model = _tiny_cached()
    spec = PromptSpec("Count:{seq}.", tuple("1" for _ in range(n)), sep, (every, ","), "count")
    r = spec.tokenize(model)
    assert r.n_items == n
    assert r.item_positions == sorted(r.item_positions)
    assert all(model.tokenizer.convert_ids_to_tokens(int(r.tokens[p])) == "1" for p in r.item_positions)
    assert spec.text.count(",") == (n - 1) // every


_TINY = {}


def _tiny_cached():
    if "m" not in _TINY:
        _TINY["m"] = tg.tiny_model("llama", seed=0)
    return _TINY["m"]


@pytest.mark.real
@pytest.mark.parametrize("name", ["smollm2", "gemma"])
def test_real_tokenizers_split_digits(request, name):
    model = request.getfixturevalue(name)
    for sep in ("", " ", ","):
        r = tokenize_items(model, prompts.COUNT_ONES, ["1"] * 12, sep=sep)
        assert r.n_items == 12
    with pytest.raises(TokenizationError, match="sep="):
        tokenize_items(model, "Count: {seq}.", ["c", "a", "r"])
    p = get_family("ones").pair(model, 30)
    assert len(p.item_positions_b) == 31
