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
"""
from __future__ import annotations

import copy
import re
import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .._core import model_device
from ..compat import kv_cache_plumbing
from ..errors import GlassesError

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


# --- KV cache helpers ------------------------------------------------------------------
def _cache_rows(cache, rows: torch.Tensor):
    """A new cache holding ``rows`` of ``cache`` (the original is left untouched)."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_select_indices(rows)
    return new


def _cache_nbytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _forward_with_cache(model, tokens: torch.Tensor):
    """``(logits, cache)`` from one forward, or ``(logits, None)`` if the model gives none."""
    try:
        out = model(tokens, return_type="logits_and_cache", use_cache=True, logits_to_keep=1)
    except (TypeError, ValueError, NotImplementedError):
        return _logits(model, tokens, 1), None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        logits, cache = out
        if cache is not None and hasattr(cache, "layers") and hasattr(cache, "batch_select_indices"):
            return logits, cache
        return logits, None
    return out, None


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


def _verified_method(model, method, kind, regime, contexts, candidate_ids, max_cache_bytes) -> str:
    """The fast path to use for these contexts: checked once per model and regime
    against :func:`score_definition` on the shortest context's probe candidates (first,
    longest, middle, last): the tree when the model takes it and it agrees, else the
    key/value cache when it agrees; a disagreeing explicit ``method`` raises."""
    from .._fastpath import choose

    j = min(range(len(contexts)), key=lambda i: int(contexts[i].shape[-1]))
    checks = scoring_checks(model, contexts[j], _probe_candidates(candidate_ids[j]),
                            max_cache_bytes=max_cache_bytes)
    if method == "cache" and "cache" not in checks:
        raise GlassesError("method='cache', but this model returned no key/value cache")
    order = {"auto": ["tree", "cache"], "tree": ["tree"], "cache": ["cache"]}[method]
    cands = [(name, checks[name]) for name in order if name in checks]
    return choose(model, f"scoring ({method})" if method != "auto" else "scoring", regime, cands,
                  reference="the plain recompute (one full forward per candidate)", fallback="recompute")


_HAS_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _offers_cache(model) -> bool:
    """Whether a forward with ``return_type='logits_and_cache'`` gives a usable cache."""
    try:
        known = _HAS_CACHE.get(model)
    except TypeError:
        known = None
    if known is not None:
        return known
    toks = torch.tensor([[0, 1]], dtype=torch.long, device=model_device(model))
    try:
        with torch.no_grad(), kv_cache_plumbing(model):
            ok = _forward_with_cache(model, toks)[1] is not None
    except Exception:  # noqa: BLE001 - no cache, then
        ok = False
    try:
        _HAS_CACHE[model] = ok
    except TypeError:
        pass
    return ok


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


def _tree_mask_kind(model) -> str | None:
    """'single' (one mask for every layer), 'dict' (full + sliding-window masks, as
    Gemma 3 takes them), or None when a 4-D tree mask cannot be trusted here."""
    cfg = _hf_config(model)
    if cfg is None:
        return None
    impl = getattr(cfg, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        return None
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    if types:
        kinds = set(types)
        if kinds <= {"full_attention"}:
            return "single"
        if kinds <= {"full_attention", "sliding_attention"} and window:
            return "dict"
        return None
    if window or getattr(cfg, "use_sliding_window", False):
        return None  # a window applied some other way: use the cache instead
    return "single"


def _tree(cands: Sequence[Sequence[int]]):
    """Prefix tree of the candidates: node list (prefix tuples, parents first) and index."""
    index: dict[tuple[int, ...], int] = {}
    order: list[tuple[int, ...]] = []
    for c in cands:
        for d in range(1, len(c) + 1):
            p = tuple(int(t) for t in c[:d])
            if p not in index:
                index[p] = len(order)
                order.append(p)
    return order, index


def _tree_masks(L: int, order, index, dtype, device, window: int | None):
    T = len(order)
    pos = torch.cat([torch.arange(L), torch.tensor([L - 1 + len(p) for p in order], dtype=torch.long)])
    allowed = torch.zeros(L + T, L + T, dtype=torch.bool)
    allowed[:L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
    allowed[L:, :L] = True
    for i, p in enumerate(order):
        for d in range(1, len(p) + 1):
            allowed[L + i, L + index[p[:d]]] = True
    neg = torch.finfo(dtype).min
    full = torch.zeros(L + T, L + T, dtype=dtype).masked_fill(~allowed, neg)
    sliding = None
    if window:
        near = (pos[:, None] - pos[None, :]) < int(window)
        sliding = torch.zeros(L + T, L + T, dtype=dtype).masked_fill(~(allowed & near), neg)
    return pos.to(device), full.to(device), (sliding.to(device) if sliding is not None else None)


def _logits(model, toks: torch.Tensor, keep=None, **kw) -> torch.Tensor:
    """Logits at the kept positions only (``keep``: an int n for the last n positions,
    or a 1-D index tensor), through ``logits_to_keep`` when the model takes it: the
    unembedding is the costliest layer of a small model with a large vocabulary, and
    full logits of a long batch do not fit in memory (Gemma: 1 MB per position)."""
    if keep is None:
        return model(toks, **kw)
    try:
        return model(toks, logits_to_keep=keep, **kw)
    except TypeError:
        full = model(toks, **kw)
        return full[:, -keep:] if isinstance(keep, int) else full[:, keep.to(full.device)]


def _score_tree(model, contexts, candidate_ids, kind, *, terminate, batch_size, max_logits_bytes=512 * 2**20):
    from .._core import model_dtype

    dev = model_device(model)
    dtype = model_dtype(model)
    window = getattr(_hf_config(model), "sliding_window", None) if kind == "dict" else None
    out: list[torch.Tensor | None] = [None] * len(contexts)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (c, cands) in enumerate(zip(contexts, candidate_ids)):
        groups[(int(c.shape[-1]), tuple(tuple(int(t) for t in x) for x in cands))].append(i)
    mask_v = None
    vocab = int(getattr(model.cfg, "d_vocab", 0) or len(model.tokenizer))
    with torch.no_grad():
        for (L, cands), idxs in groups.items():
            order, index = _tree(cands)
            T = len(order)
            pos, full, sliding = _tree_masks(L, order, index, dtype, dev, window)
            tree_toks = torch.tensor([p[-1] for p in order], dtype=torch.long, device=dev)
            keep = torch.arange(L - 1, L + T, device=dev)  # kept row 0: after the context; row 1+i: after node i
            # flattened (candidate, kept row, token) triples and the row of each candidate's end
            cj, rows, tks, ends = [], [], [], []
            for j, c in enumerate(cands):
                prev = 0
                for d in range(1, len(c) + 1):
                    cj.append(j)
                    rows.append(prev)
                    tks.append(c[d - 1])
                    prev = 1 + index[c[:d]]
                ends.append(prev)
            cj_t = torch.tensor(cj, device=dev)
            rows_t = torch.tensor(rows, device=dev)
            tks_t = torch.tensor(tks, device=dev)
            ends_t = torch.tensor(ends, device=dev)
            per_row = (T + 1) * max(vocab, 1) * 4
            step = max(1, min(int(batch_size), max_logits_bytes // per_row))
            for s in range(0, len(idxs), step):
                chunk = idxs[s: s + step]
                B = len(chunk)
                toks = torch.cat([torch.stack([contexts[i].reshape(-1) for i in chunk]).to(dev),
                                  tree_toks.expand(B, -1)], dim=1)
                m4 = full.expand(B, 1, -1, -1)
                am = {"full_attention": m4, "sliding_attention": sliding.expand(B, 1, -1, -1)} \
                    if kind == "dict" else m4
                logits = _logits(model, toks, keep, attention_mask=am, position_ids=pos.expand(B, -1))
                if terminate and mask_v is None:
                    mask_v = digit_continuation_mask(model.tokenizer, logits.shape[-1]).to(dev)
                for r, i in enumerate(chunk):
                    lg = logits[r].float()  # [T+1, V]
                    lse = torch.logsumexp(lg, -1).double()
                    lp = lg[rows_t, tks_t].double() - lse[rows_t]
                    sc = torch.zeros(len(cands), dtype=torch.float64, device=dev).index_add_(0, cj_t, lp)
                    if terminate:
                        e = lg[ends_t]
                        sc += torch.logsumexp(e.masked_fill(mask_v, float("-inf")), -1).double() - lse[ends_t]
                    out[i] = sc.cpu()
                del logits
    return out  # type: ignore[return-value]


def _score_cached(model, contexts, candidate_ids, *, terminate, batch_size, use_cache, require_cache,
                  max_cache_bytes):
    dev = model_device(model)
    mask = None
    out: list[torch.Tensor | None] = [None] * len(contexts)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(contexts):
        by_len[int(c.shape[-1])].append(i)
    with torch.no_grad(), kv_cache_plumbing(model):
        for _, idxs in sorted(by_len.items()):
            for s in range(0, len(idxs), max(1, batch_size)):
                chunk = idxs[s: s + max(1, batch_size)]
                toks = torch.stack([contexts[i].reshape(-1) for i in chunk]).to(dev)
                if not use_cache:
                    logits, cache = _logits(model, toks, 1), None
                else:
                    logits, cache = _forward_with_cache(model, toks)
                    if cache is None and require_cache:
                        raise GlassesError("method='cache', but this model returned no key/value cache")
                last = logits[:, -1].float()
                if terminate and mask is None:
                    mask = digit_continuation_mask(model.tokenizer, last.shape[-1]).to(dev)
                for r, i in enumerate(chunk):
                    out[i] = _score_one(model, toks[r], last[r], cache, r, candidate_ids[i], mask,
                                        batch_size=batch_size, max_cache_bytes=max_cache_bytes)
                del cache
    return out  # type: ignore[return-value]


def _end_logprob(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log P(next token does not start with a digit), per row of ``logits`` [B, V]."""
    return torch.logsumexp(logits.masked_fill(mask, float("-inf")), -1) - torch.logsumexp(logits, -1)


def _score_one(model, ctx, last_logits, cache, row, cands, mask, *, batch_size, max_cache_bytes):
    dev = ctx.device
    first = torch.log_softmax(last_logits.double(), -1)
    scores = torch.empty(len(cands), dtype=torch.float64)
    groups: dict[int, list[int]] = defaultdict(list)
    for j, c in enumerate(cands):
        if not len(c):
            raise GlassesError("a candidate has no tokens")
        groups[len(c)].append(j)
    per_row = None
    if cache is not None:
        per_row = max(1, _cache_nbytes(cache) // max(1, _batch_of(cache)))
    for k, js in sorted(groups.items()):
        if cache is not None:
            size = max(1, min(64, max_cache_bytes // per_row))
        else:
            size = max(1, batch_size)
        for s in range(0, len(js), size):
            sub = js[s: s + size]
            ct = torch.tensor([list(cands[j]) for j in sub], dtype=torch.long, device=dev)  # [C, k]
            lp = first[ct[:, 0]].clone()
            need_logits = k > 1 or mask is not None
            if need_logits:
                if cache is not None:
                    rows = torch.full((len(sub),), row, dtype=torch.long, device=dev)
                    logits = model(ct, past_key_values=_cache_rows(cache, rows), return_type="logits")
                else:
                    full = torch.cat([ctx.expand(len(sub), -1), ct], dim=1)
                    logits = _logits(model, full, k)
                logits = logits.double()
                if k > 1:
                    lsm = torch.log_softmax(logits[:, :-1], -1)
                    lp += lsm.gather(-1, ct[:, 1:, None])[..., 0].sum(-1)
                if mask is not None:
                    lp += _end_logprob(logits[:, -1], mask)
            scores[sub] = lp.cpu()
    return scores


def _batch_of(cache) -> int:
    for layer in getattr(cache, "layers", []):
        t = getattr(layer, "keys", None)
        if isinstance(t, torch.Tensor) and t.ndim >= 1:
            return int(t.shape[0])
    return 1


# greedy generation lives in tl_glasses.tasks.generation; its names stay importable from here
from .generation import (  # noqa: E402
    Generation,
    answer_complete,
    decode_definition,
    generate_greedy,
    generation_checks,
)
