"""Tokenisation control: put items in a prompt and check that each item is one token.

The paper's theory (Sec. 4) is about *tokens*: a sequence and the same sequence with
its last token repeated. Tokenizers merge runs of digits differently ("1111" may be
one token, four tokens, or "11"+"11"), so a prompt that *says* it holds n items does
not always hold n item tokens. :func:`tokenize_items` builds the prompt, tokenises it
exactly as ``model.to_tokens`` does (same BOS convention), and locates every item's
token, or raises :class:`~tl_glasses.errors.TokenizationError` showing the tokens
around the first merge and a separator that works.

Measured on the embedded tokenizers (``describe_tokenization`` reproduces it):

* SmolLM2 (byte-level BPE): digits are always split: "1111" -> '1','1','1','1';
  "1 1 1" -> '1','Ġ','1','Ġ','1' (the space is its own token); "1,1,1" -> '1',',','1',...
* Gemma 3 (SentencePiece): digits are split one per token as well; a space before a
  digit is its own token '▁' (so "1 1" is '1','▁','1'), and "," is its own token.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .._vocab import token_strings as _token_strings
from ..errors import GlassesError, TokenizationError
from ..typing import Tokens

__all__ = [
    "TokenizedItems",
    "tokenize_items",
    "describe_tokenization",
    "token_strings",
    "token_char_spans",
    "encode",
]

_SEPARATOR_CANDIDATES = (" ", ",", ", ", " , ", "|")


@dataclass(frozen=True)
class TokenizedItems:
    """A prompt holding ``items``, tokenised, with the token index of each item.

    ``tokens`` is ``[pos]`` (what ``model.to_tokens(text)[0]`` gives, BOS included when
    the model prepends one); ``item_positions[i]`` is the index in ``tokens`` of the one
    token that holds ``items[i]``.
    """

    tokens: Tokens
    item_positions: list[int]
    text: str
    items: tuple[str, ...] = ()
    sep: str = ""
    template: str = "{seq}"
    prepend_bos: bool | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def n_items(self) -> int:
        return len(self.item_positions)

    @property
    def last_item_position(self) -> int:
        return self.item_positions[-1]

    def __repr__(self) -> str:
        return (
            f"TokenizedItems({self.n_items} items in {self.n_tokens} tokens, "
            f"sep={self.sep!r}, text={_short(self.text)!r})"
        )


def _short(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n // 2] + "…" + s[-n // 2 :]


def _tokenizer(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise GlassesError(
            "the model has no tokenizer; tokenize_items needs one (load the model with "
            "tl_glasses.load_model, or wrap_model(hf_model, tokenizer))"
        )
    return tok


def encode(model, text: str, *, prepend_bos: bool | None = None) -> Tokens:
    """``model.to_tokens(text)[0]`` without silent truncation, on the CPU: ``[pos]``."""
    if not isinstance(text, str) or not text:
        raise GlassesError("the text to tokenise is empty; pass a non-empty string")
    kw = {} if prepend_bos is None else {"prepend_bos": prepend_bos}
    try:
        toks = model.to_tokens(text, truncate=False, **kw)
    except TypeError:  # older to_tokens without truncate=
        toks = model.to_tokens(text, **kw)
    return toks[0].detach().cpu().long()


def token_strings(model, ids: Sequence[int] | torch.Tensor) -> list[str]:
    """The text of each of ``ids`` (``tokenizer.decode([id])``: ``" 1"``, not ``"Ġ1"``),
    as every table and figure of tl_glasses shows a token (:func:`tl_glasses._vocab.token_strings`)."""
    return _token_strings(_tokenizer(model), ids)


def token_char_spans(model, text: str, tokens: torch.Tensor) -> list[tuple[int, int] | None]:
    """Character span ``(start, end)`` in ``text`` of each token of ``tokens`` (the
    encoding of ``text``); ``None`` for tokens that are not from the text (BOS).

    Uses the fast tokenizer's offset mapping when the text's own encoding is a
    suffix of ``tokens`` (the usual case: ``[BOS] + text``); otherwise the lengths of
    decoded prefixes.
    """
    tok = _tokenizer(model)
    ids = tokens.tolist()
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        own, offsets = list(enc["input_ids"]), [tuple(map(int, o)) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        own, offsets = None, None
    if own and len(own) <= len(ids) and ids[len(ids) - len(own):] == own:
        lead = len(ids) - len(own)
        return [None] * lead + offsets
    # Fallback: decode growing prefixes (exact for tokenizers whose decode of a
    # prefix is a prefix of the decoded text).
    spans: list[tuple[int, int] | None] = []
    prev = 0
    for k in range(len(ids)):
        cur = len(tok.decode(ids[: k + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False))
        spans.append((prev, cur) if cur > prev else None)
        prev = cur
    return spans


def _joiners(items: Sequence[str], sep: str, joiners: Sequence[str] | None) -> list[str]:
    if joiners is None:
        return [sep] * max(0, len(items) - 1)
    joiners = [str(j) for j in joiners]
    if len(joiners) != max(0, len(items) - 1):
        raise GlassesError(
            f"joiners must hold one string per gap between items ({max(0, len(items) - 1)}); "
            f"got {len(joiners)}"
        )
    return joiners


def _join(items: Sequence[str], joiners: Sequence[str]) -> str:
    return items[0] + "".join(j + it for j, it in zip(joiners, items[1:]))


def _item_spans(prefix_len: int, items: Sequence[str], joiners: Sequence[str]) -> list[tuple[int, int]]:
    spans, pos = [], prefix_len
    for i, it in enumerate(items):
        if i:
            pos += len(joiners[i - 1])
        spans.append((pos, pos + len(it)))
        pos += len(it)
    return spans


def _split_template(template: str) -> tuple[str, str]:
    if not isinstance(template, str) or template.count("{seq}") != 1:
        raise GlassesError(
            f"a template must contain the slot '{{seq}}' exactly once; got {_short(str(template))!r}"
        )
    prefix, suffix = template.split("{seq}")
    return prefix, suffix


class _SpanIndex:
    """Which tokens overlap a character range (token spans are in text order)."""

    def __init__(self, spans):
        self.spans = spans
        self.idx = [t for t, sp in enumerate(spans) if sp is not None and sp[1] > sp[0]]
        self.ends = [spans[t][1] for t in self.idx]

    def overlapping(self, s: int, e: int) -> list[int]:
        out = []
        k = bisect.bisect_right(self.ends, s)  # first token ending after s
        while k < len(self.idx) and self.spans[self.idx[k]][0] < e:
            out.append(self.idx[k])
            k += 1
        return out


def _locate(spans, item_spans) -> tuple[list[int], int | None, str]:
    """Token index of every item, or the index of the first failing item and why."""
    owner: dict[int, int] = {}
    positions: list[int] = []
    index = _SpanIndex(spans)
    for i, (s, e) in enumerate(item_spans):
        hits = index.overlapping(s, e)
        if len(hits) != 1:
            why = "is split over several tokens" if len(hits) > 1 else "is in no token"
            return positions, i, why
        t = hits[0]
        if t in owner:
            return positions, i, f"shares its token with item {owner[t]} (the tokenizer merged them)"
        owner[t] = i
        positions.append(t)
    return positions, None, ""


def _tokenize(model, template, items, js, prepend_bos):
    prefix, suffix = _split_template(template)
    text = prefix + _join(items, js) + suffix
    tokens = encode(model, text, prepend_bos=prepend_bos)
    spans = token_char_spans(model, text, tokens)
    positions, bad, why = _locate(spans, _item_spans(len(prefix), items, js))
    return tokens, text, spans, positions, bad, why


def tokenize_items(
    model,
    template: str,
    items: Sequence[str],
    *,
    sep: str = "",
    prepend_bos: bool | None = None,
    joiners: Sequence[str] | None = None,
) -> TokenizedItems:
    """Join ``items`` with ``sep``, put them in ``template``'s ``{seq}`` slot, tokenise
    like ``model.to_tokens`` and check that every item is exactly one token of its own.

    ``joiners`` (one string per gap, overriding ``sep``) places different text between
    different items (e.g. a comma after every third item).

    Raises :class:`TokenizationError` (tokens around the first merge shown, a working
    separator suggested) when the tokenizer merges items or splits one.
    """
    items = tuple(str(x) for x in items)
    if not items:
        raise GlassesError("no items to tokenise; pass at least one item")
    if any(not x for x in items):
        raise GlassesError("an item is the empty string; every item must be a non-empty string")
    js = _joiners(items, sep, joiners)
    tokens, text, spans, positions, bad, why = _tokenize(model, template, items, js, prepend_bos)
    if bad is not None:
        raise TokenizationError(
            _merge_message(model, template, items, sep, js, joiners is not None, tokens, spans, bad, why,
                           prepend_bos)
        )
    return TokenizedItems(
        tokens=tokens, item_positions=positions, text=text, items=items, sep=sep,
        template=template, prepend_bos=prepend_bos,
    )


def _merge_message(model, template, items, sep, js, custom_joiners, tokens, spans, bad, why,
                   prepend_bos) -> str:
    prefix, _ = _split_template(template)
    item_spans = _item_spans(len(prefix), items, js)
    s, e = item_spans[bad]
    index = _SpanIndex(spans)
    hits = index.overlapping(s, e) or [0]
    lo, hi = max(0, hits[0] - 4), min(len(tokens), hits[-1] + 5)
    shown = token_strings(model, tokens[lo:hi])
    mark = ", ".join(f"[{x!r}]" if lo + j in hits else repr(x) for j, x in enumerate(shown))
    n_item_tokens = len({t for is_, ie in item_spans for t in index.overlapping(is_, ie)})
    works = []
    for cand in _SEPARATOR_CANDIDATES:
        if cand == sep and not custom_joiners:
            continue
        # check on a short run first (cheap), then on the full items
        short = items[: min(len(items), 8)]
        if _tokenize(model, template, short, _joiners(short, cand, None), prepend_bos)[4] is not None:
            continue
        if _tokenize(model, template, items, _joiners(items, cand, None), prepend_bos)[4] is not None:
            continue
        works.append(cand)
        if len(works) == 2:
            break
    hint = (
        "try " + " or ".join(f"sep={w!r}" for w in works)
        if works else "no common separator (' ', ',', ', ') makes every item one token with this tokenizer; "
        "use items the tokenizer keeps apart"
    )
    return (
        f"item {bad} ({items[bad]!r}) {why}: the prompt holds {len(items)} items but they occupy "
        f"{n_item_tokens} item tokens. Tokens {lo}..{hi - 1} (the item's token in brackets): "
        f"{mark}. With sep={sep!r}{' and the given joiners' if custom_joiners else ''} this tokenizer "
        f"does not keep the items apart; {hint}"
    )


def describe_tokenization(model, text: str, *, prepend_bos: bool | None = None):
    """One row per token of ``text`` as ``model.to_tokens`` makes it: position, id,
    token (its decoded text, as every table shows a token), piece (the characters of ``text`` it covers, or '' for
    BOS), start, end (character span; -1 for tokens not from the text)."""
    import pandas as pd

    tokens = encode(model, text, prepend_bos=prepend_bos)
    spans = token_char_spans(model, text, tokens)
    strs = token_strings(model, tokens)
    rows = []
    for p, (i, s, sp) in enumerate(zip(tokens.tolist(), strs, spans)):
        a, b = sp if sp is not None else (-1, -1)
        rows.append(dict(position=p, id=int(i), token=s, piece=text[a:b] if sp else "", start=a, end=b))
    return pd.DataFrame(rows, columns=["position", "id", "token", "piece", "start", "end"])
