"""Two ways to read a model's answer, both batched.

**Teacher-forced scoring** (:func:`score_candidates`). The prompt is followed by the
paper's answer prefix ("The final answer to your maths question is: "), and every
candidate answer ``c`` (the digits for copying, 0..max(2n, 120) for counting) gets

    log P(c) = sum_j log p(t_j | context, t_<j)  +  log P(no further digit | context, c)

where ``t_1..t_k`` are the tokens of ``c`` as the tokenizer writes it after the prefix.
The last term makes the candidates a proper distribution over *numbers*: without it
"1" would always beat "12" (every string starting with "1" counts for "1"). It is the
probability that the next token does not start with a digit. The prediction is the
best candidate; reported with it: the rank of the right answer and the log-probability
difference to the best wrong answer (for one-token candidates without the end term
this is exactly the logit difference). Small models that never follow the answer
format are measurable this way.

The context is run once, with the key/value cache; candidates of the same token length
are then run together from copies of that cache (no padding anywhere). Where a model
offers no cache (``kv_cache=False``, or an older TransformerLens model) each candidate
batch recomputes context + candidate instead; both give the same numbers (tested).

**Greedy generation** (:func:`generate_greedy`) lives in
:mod:`tl_glasses.tasks.generation` and is re-exported here.

Every fast path here (the tree, the cache) is checked against :func:`score_definition`
before its numbers are used (:mod:`tl_glasses._fastpath`).

Layout: the tree path is in :mod:`~tl_glasses.tasks._tree`, the key/value-cache path
(and the plain recompute) in :mod:`~tl_glasses.tasks._kvcache`; both look the helpers
kept here up through this module when called, so patching a name here reaches every
path. Every name is re-exported here, where it always was.
"""
from __future__ import annotations

import re
import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .._core import model_device
from ..errors import GlassesError
# the fast paths (re-exported: every name importable from here before the split still is)
from ._kvcache import (  # noqa: F401
    _HAS_CACHE,
    _batch_of,
    _cache_nbytes,
    _cache_rows,
    _forward_with_cache,
    _offers_cache,
    _score_cached,
    _score_one,
)
from ._tree import _score_tree, _tree, _tree_mask_kind, _tree_masks  # noqa: F401

__all__ = [
    "Generation",
    "ScoredCandidates",
    "chat_template",
    "digit_continuation_mask",
    "candidate_token_ids",
    "score_candidates",
    "METHODS",
    "generate_greedy",
    "score_definition",
    "decode_definition",
    "scoring_checks",
    "generation_checks",
    "answer_complete",
    "end_token_ids",
]


# --- prompt text ---------------------------------------------------------------------
def chat_template(model, template: str, chat: bool | str = "auto") -> tuple[str, bool | None, bool]:
    """The text the model reads for ``template`` (with its ``{seq}`` slot kept).

    ``chat="auto"`` wraps the prompt as one user turn with the tokenizer's chat template
    when it has one (both embedded models are instruction-tuned); ``True`` requires one;
    ``False`` uses the prompt as plain text. Returns ``(text, prepend_bos, chat_used)``:
    a chat text carries its own special tokens, so no BOS is added to it.
    """
    tok = getattr(model, "tokenizer", None)
    has = bool(getattr(tok, "chat_template", None))
    if chat == "auto":
        use = has
    elif chat is True or chat is False:
        use = chat
    else:
        raise GlassesError(f"chat is 'auto', True or False; got {chat!r}")
    if use and not has:
        raise GlassesError(
            "chat=True, but this model's tokenizer has no chat template; pass chat=False "
            "(or chat='auto') to use the prompt as plain text"
        )
    if not use:
        return template, None, False
    text = tok.apply_chat_template(
        [{"role": "user", "content": template}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(text, str) or text.count("{seq}") != 1:
        raise GlassesError(
            "the tokenizer's chat template changed the prompt's '{seq}' slot; pass chat=False"
        )
    return text, False, True


# --- vocabulary facts ------------------------------------------------------------------
_DIGIT_MASKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_BYTE_DIGIT = re.compile(r"^<0x3[0-9]>$", re.IGNORECASE)


def digit_continuation_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """``[vocab_size]`` bool: tokens whose text starts with a digit, i.e. that would
    continue a number written just before them (a token starting with a space, '▁' or
    'Ġ' starts a new word and does not). Byte-fallback tokens ``<0x30>``..``<0x39>``
    count as digits."""
    key = tokenizer
    try:
        cached = _DIGIT_MASKS.get(key)
    except TypeError:
        cached = None
    if cached is not None and cached.shape[0] == vocab_size:
        return cached
    n = min(vocab_size, len(tokenizer))
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for i, p in enumerate(pieces):
        if isinstance(p, bytes):
            p = p.decode("latin-1")
        if p and (p[0] in "0123456789" or _BYTE_DIGIT.match(p)):
            mask[i] = True
    try:
        _DIGIT_MASKS[key] = mask
    except TypeError:
        pass
    return mask


def end_token_ids(model) -> set[int]:
    """Token ids that end a generation: EOS and the chat end-of-turn markers the
    tokenizer knows (``<end_of_turn>``, ``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>``)."""
    tok = model.tokenizer
    ids = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    unk = tok.unk_token_id
    vocab = tok.get_vocab()
    for s in ("<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<eos>"):
        i = vocab.get(s)
        if i is not None and i != unk:
            ids.add(int(i))
    return ids


# --- candidates --------------------------------------------------------------------
def candidate_token_ids(model, context_text: str, context_tokens: torch.Tensor,
                        candidates: Sequence[str]) -> tuple[list[list[int]], bool]:
    """Tokens of each candidate as the tokenizer writes it right after ``context_text``.

    For each candidate, ``context_text + candidate`` is tokenised; when the context's own
    tokens are a prefix of it (the usual case: the prefix ends in a space or a
    punctuation mark), the rest are the candidate's tokens. If the tokenizer merges
    across the boundary for any candidate, every candidate is tokenised on its own
    instead, and ``canonical`` is False.
    """
    tok = model.tokenizer
    ctx = [int(t) for t in context_tokens.tolist()]
    own = tok(context_text, add_special_tokens=False)["input_ids"]
    lead = len(ctx) - len(own)
    canonical = lead >= 0 and ctx[lead:] == list(own)
    out: list[list[int]] = []
    if canonical:
        fulls = tok([context_text + c for c in candidates], add_special_tokens=False)["input_ids"]
        for c, full in zip(candidates, fulls):
            full = list(full)
            if full[: len(own)] != list(own) or len(full) == len(own):
                canonical = False
                break
            out.append(full[len(own):])
    if not canonical:
        out = [list(tok(c, add_special_tokens=False)["input_ids"]) for c in candidates]
        if any(not o for o in out):
            raise GlassesError("a candidate answer tokenises to nothing; candidates must be non-empty text")
    return out, canonical


# --- teacher-forced scoring --------------------------------------------------------------
@dataclass
class ScoredCandidates:
    """Log-probabilities of every candidate answer after one context."""

    candidates: list[str]
    logprobs: torch.Tensor  # [n_candidates], float64
    token_ids: list[list[int]]
    canonical: bool = True

    def best(self) -> int:
        return int(torch.argmax(self.logprobs))

    def rank_of(self, index: int) -> int:
        """1 for the best candidate (ties count against the right answer)."""
        return int((self.logprobs >= self.logprobs[index]).sum())

    def margin(self, index: int) -> float:
        """log P(right) - max over wrong candidates of log P(wrong)."""
        others = torch.cat([self.logprobs[:index], self.logprobs[index + 1:]])
        return float(self.logprobs[index] - others.max()) if len(others) else float("inf")


METHODS = ("auto", "tree", "cache", "recompute")


def score_candidates(
    model,
    contexts: Sequence[torch.Tensor],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    *,
    terminate: bool = True,
    batch_size: int = 8,
    method: str = "auto",
    max_cache_bytes: int = 512 * 2**20,
) -> list[torch.Tensor]:
    """Total log-probability of each candidate continuation of each context.

    ``contexts[i]`` is a ``[pos]`` token tensor (BOS included if wanted);
    ``candidate_ids[i][j]`` the tokens of candidate j after context i. Returns one
    float64 tensor ``[n_candidates_i]`` per context. With ``terminate`` the log
    probability that the token after the candidate does not start with a digit is
    added (see the module doc).

    ``method``: ``"tree"`` runs context and all candidates in ONE forward: the
    candidates' prefix tree is appended to the context, each tree token attending to
    the context and its own ancestors only (a 4-D attention mask, positions set to
    the depth in the tree; sliding-window layers get their own mask); ``"cache"`` runs
    the context once and the candidates (grouped by token length) from copies of its
    key/value cache; ``"recompute"`` runs context + candidate for every candidate.
    All three give the same numbers (tested against plain ``transformers``); ``"auto"``
    takes the first the model supports. Contexts of equal length (and equal candidate
    tokens, for ``"tree"``) run in one batch of up to ``batch_size``.
    """
    if len(contexts) != len(candidate_ids):
        raise GlassesError("score_candidates needs one candidate list per context")
    if method not in METHODS:
        from ..errors import UnknownNameError

        raise UnknownNameError("scoring method", method, METHODS)
    for cands in candidate_ids:
        if not len(cands) or any(not len(c) for c in cands):
            raise GlassesError("every context needs at least one candidate, and every candidate a token")
    if method == "recompute":
        return _score_cached(model, contexts, candidate_ids, terminate=terminate, batch_size=batch_size,
                             use_cache=False, require_cache=False, max_cache_bytes=max_cache_bytes)
    kind = _tree_mask_kind(model)
    if method == "tree" and kind is None:
        raise GlassesError(
            "method='tree' needs a transformers-backed model with full (and optionally "
            "sliding-window) attention layers and eager/sdpa attention; use method='cache'"
        )
    out: list[torch.Tensor | None] = [None] * len(contexts)
    for regime, idxs in _regimes(model, contexts, candidate_ids).items():
        use = _verified_method(model, method, kind, regime, [contexts[i] for i in idxs],
                               [candidate_ids[i] for i in idxs], max_cache_bytes)
        sub_ctx = [contexts[i] for i in idxs]
        sub_cands = [candidate_ids[i] for i in idxs]
        if use == "tree":
            got = _score_tree(model, sub_ctx, sub_cands, kind, terminate=terminate, batch_size=batch_size)
        else:
            got = _score_cached(model, sub_ctx, sub_cands, terminate=terminate, batch_size=batch_size,
                                use_cache=use == "cache", require_cache=use == "cache",
                                max_cache_bytes=max_cache_bytes)
        for i, g in zip(idxs, got):
            out[i] = g
    return out  # type: ignore[return-value]


def _regimes(model, contexts, candidate_ids) -> dict[str, list[int]]:
    """Contexts grouped by whether context + candidate fits in the model's sliding
    window (a fast path can be right inside the window and wrong beyond it)."""
    window = getattr(_hf_config(model), "sliding_window", None)
    out: dict[str, list[int]] = defaultdict(list)
    for i, (c, cands) in enumerate(zip(contexts, candidate_ids)):
        span = int(c.shape[-1]) + max(len(x) for x in cands)
        out["beyond window" if window and span > int(window) else "all"].append(i)
    return dict(out)


def _tolerance(model) -> float:
    from .._core import model_dtype

    return 2e-4 if model_dtype(model) in (torch.float32, torch.float64) else 0.15


def _probe_candidates(cands):
    longest = max(range(len(cands)), key=lambda j: len(cands[j]))
    return [cands[j] for j in dict.fromkeys([0, longest, len(cands) // 2, len(cands) - 1])]


def scoring_checks(model, context: torch.Tensor, candidates: Sequence[Sequence[int]], *,
                   max_cache_bytes: int = 512 * 2**20) -> dict[str, Callable[[], tuple[float, float, str]]]:
    """One check per fast scoring path this model supports (``"tree"``, ``"cache"``):
    each scores ``candidates`` after ``context`` and returns ``(max absolute difference
    from score_definition, tolerance, detail)``. Used by ``score_candidates`` (through
    :func:`tl_glasses._fastpath.choose`) and by ``tl-glasses doctor``."""
    ref_box: list[torch.Tensor] = []

    def reference() -> torch.Tensor:
        if not ref_box:
            ref_box.append(score_definition(model, context, candidates, terminate=True))
        return ref_box[0]

    def check(fast) -> Callable[[], tuple[float, float, str]]:
        def run():
            got = fast()
            diff = float((got - reference()).abs().max())
            return diff, _tolerance(model), f"{len(candidates)} candidates after {int(context.shape[-1])} tokens"
        return run

    out: dict[str, Callable[[], tuple[float, float, str]]] = {}
    kind = _tree_mask_kind(model)
    if kind is not None:
        out["tree"] = check(lambda: _score_tree(model, [context], [candidates], kind, terminate=True,
                                                batch_size=1)[0])
    if _offers_cache(model):
        out["cache"] = check(lambda: _score_cached(model, [context], [candidates], terminate=True, batch_size=1,
                                                   use_cache=True, require_cache=True,
                                                   max_cache_bytes=max_cache_bytes)[0])
    return out


#: the longest probe context of a scoring check inside the "all" regime (its first and
#: last halves of the shortest context): the check's cost stays small however long the
#: contexts scored are (the definition costs one full forward per probe candidate)
PROBE_TOKENS = 256


def _probe_context(model, context: torch.Tensor, regime: str) -> torch.Tensor:
    """The probe a scoring check runs on: ``context`` itself when it is short, else its
    first and last tokens (the start of the prompt and the answer prefix), as many as
    stay in ``regime``: at most :data:`PROBE_TOKENS`, or just beyond the sliding window
    (the window + 16) in the "beyond window" regime."""
    ctx = context.reshape(-1)
    keep = PROBE_TOKENS
    if regime == "beyond window":
        keep = int(getattr(_hf_config(model), "sliding_window")) + 16
    if ctx.shape[0] <= keep:
        return ctx
    head = keep // 2
    return torch.cat([ctx[:head], ctx[ctx.shape[0] - (keep - head):]])


def _verified_method(model, method, kind, regime, contexts, candidate_ids, max_cache_bytes) -> str:
    """The fast path to use for these contexts: checked once per model and regime
    against :func:`score_definition` on a probe made from the shortest context
    (:func:`_probe_context`: at most 256 tokens, or just over the sliding window beyond
    it) and its probe candidates (first, longest, middle, last): the tree when the model
    takes it and it agrees, else the key/value cache when it agrees; a disagreeing
    explicit ``method`` raises."""
    from .._fastpath import choose

    j = min(range(len(contexts)), key=lambda i: int(contexts[i].shape[-1]))
    probe = _probe_candidates(candidate_ids[j])
    checks = scoring_checks(model, _probe_context(model, contexts[j], regime), probe,
                            max_cache_bytes=max_cache_bytes)
    if method == "cache" and "cache" not in checks:
        raise GlassesError("method='cache', but this model returned no key/value cache")
    order = {"auto": ["tree", "cache"], "tree": ["tree"], "cache": ["cache"]}[method]
    cands = [(name, checks[name]) for name in order if name in checks]
    return choose(model, f"scoring ({method})" if method != "auto" else "scoring", regime, cands,
                  reference="the plain recompute (one full forward per candidate)", fallback="recompute")


def score_definition(model, context: torch.Tensor, candidates: Sequence[Sequence[int]], *,
                     terminate: bool = True) -> torch.Tensor:
    """The definition every scoring path is checked against: for each candidate ONE
    full forward of context + candidate (batch of one, no cache, no mask), the log
    probability of each candidate token from the logits at the position before it,
    plus (``terminate``) log P(no digit continues) after the last token. float64."""
    dev = model_device(model)
    ctx = context.reshape(-1).to(dev)
    mask = None
    out = torch.empty(len(candidates), dtype=torch.float64)
    with torch.no_grad():
        for j, c in enumerate(candidates):
            ct = torch.tensor(list(c), dtype=torch.long, device=dev)
            toks = torch.cat([ctx, ct])[None]
            lg = _logits(model, toks, len(c) + 1)[0].double()  # positions L-1 .. L+k-1
            lsm = torch.log_softmax(lg, -1)
            lp = lsm[torch.arange(len(c), device=dev), ct].sum()
            if terminate:
                if mask is None:
                    mask = digit_continuation_mask(model.tokenizer, lg.shape[-1]).to(dev)
                lp = lp + _end_logprob(lg[-1:], mask)[0]
            out[j] = float(lp)
    return out


def _hf_config(model):
    hf = getattr(model, "original_model", None)
    return getattr(hf, "config", None)


def _logits(model, toks: torch.Tensor, keep=None, **kw) -> torch.Tensor:
    """Logits at the kept positions only (``keep``: an int n for the last n positions,
    or a 1-D index tensor), through ``logits_to_keep`` when the model takes it: the
    unembedding is the costliest layer of a small model with a large vocabulary, and
    full logits of a long batch do not fit in memory (Gemma: 1 MB per position). A bare
    forward of the capture engine (:func:`tl_glasses.capture.forward`)."""
    from ..capture import forward

    return forward(model, toks, keep, **kw)


def _end_logprob(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log P(next token does not start with a digit), per row of ``logits`` [B, V]."""
    return torch.logsumexp(logits.masked_fill(mask, float("-inf")), -1) - torch.logsumexp(logits, -1)


# greedy generation lives in tl_glasses.tasks.generation; its names stay importable from here
from .generation import (  # noqa: E402
    Generation,
    answer_complete,
    decode_definition,
    generate_greedy,
    generation_checks,
)
