"""Greedy generation, checked against its definition.

Prompts of equal token length are decoded together (no padding, so no mask or position
shift can change a row); a row stops at an end-of-sequence token, once a complete answer
line has been written, or after ``max_new_tokens``. Both fast paths, the key/value cache
and batching rows, are compared once per model (and sliding-window regime) with
:func:`decode_definition`, one prompt at a time with one full forward, before they are
used (see :mod:`tl_glasses._fastpath`).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .._core import model_device
from ..compat import kv_cache_plumbing
from ..errors import GlassesError
from . import parsing
from . import scoring as _s

__all__ = ["Generation", "answer_complete", "generate_greedy", "decode_definition", "generation_checks"]


_COMPLETE_DIGITS = re.compile(
    "(?:" + parsing._FORMAT_RE.pattern + r")[\s:=*_`'\"\u2018\u2019\u201c\u201d<\[(]*[-\u2212]?\d[\d,]*(?:\.\d+)?(?:[^\d,.]|[.,]\D)",
    re.IGNORECASE,
)
_COMPLETE_WORDS = re.compile(
    "(?:" + parsing._FORMAT_RE.pattern + r")[\s:=*_`'\"\u2018\u2019\u201c\u201d<\[(]*[a-z][a-z \-]*[.!?\n]",
    re.IGNORECASE,
)


def answer_complete(text: str) -> bool:
    """True once ``text`` holds the paper's answer phrase, a number, and something after
    the number (so the number cannot grow): generation can stop there."""
    return bool(_COMPLETE_DIGITS.search(text) or _COMPLETE_WORDS.search(text))


@dataclass
class Generation:
    """What greedy decoding produced for one prompt."""

    text: str
    token_ids: list[int]
    stop_reason: str  # "eos", "answer", "max_new_tokens"

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)


def generate_greedy(
    model,
    prompts: Sequence[torch.Tensor],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    stop: Callable[[str], bool] | None = answer_complete,
    kv_cache: bool | str = "auto",
) -> list[Generation]:
    """Greedy continuations of ``prompts`` (each ``[pos]``), at most ``max_new_tokens``.

    Prompts of the same token length are decoded together (no padding); a row stops at
    an end token (:func:`end_token_ids`), when ``stop(text)`` is true, or at the bound.

    ``kv_cache``: ``"auto"`` decodes with the key/value cache when the model offers one
    and it reproduces the definition, else by recomputing the whole sequence every
    step; ``True`` / ``False`` ask for one of the two. Either fast path (the cache,
    and batching rows) is checked once per model against :func:`decode_definition`
    (one prompt at a time, one full forward per step) before it is used; a path that
    disagrees is never used, and when none agrees a ``FastPathError`` says so.
    """
    if max_new_tokens < 1:
        raise GlassesError(f"max_new_tokens must be at least 1; got {max_new_tokens}")
    if kv_cache not in ("auto", True, False):
        raise GlassesError(f"kv_cache is 'auto', True or False; got {kv_cache!r}")
    dev = model_device(model)
    tok = model.tokenizer
    ends = _s.end_token_ids(model)
    out: list[Generation | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[int(p.shape[-1])].append(i)
    if not prompts:
        return []
    use_cache = _generation_method(model, prompts, kv_cache, batch_size, max_new_tokens) == "cache"
    with torch.no_grad():
        for _, idxs in sorted(by_len.items()):
            for s in range(0, len(idxs), max(1, batch_size)):
                chunk = idxs[s: s + max(1, batch_size)]
                toks = torch.stack([prompts[i].reshape(-1) for i in chunk]).to(dev)
                for i, g in zip(chunk, _decode(model, toks, tok, ends, max_new_tokens, stop, use_cache)):
                    out[i] = g
    return out  # type: ignore[return-value]


def _generation_probe(model, prompts, max_new_tokens):
    """(regime, probe prompts, tokens to decode) for checking generation on these prompts."""
    window = getattr(_s._hf_config(model), "sliding_window", None)
    longest = max(int(p.shape[-1]) for p in prompts)
    regime = "beyond window" if window and longest + max_new_tokens > int(window) else "all"
    if regime == "beyond window":
        group = [p for p in prompts if int(p.shape[-1]) + max_new_tokens > int(window)]
        L = min(int(p.shape[-1]) for p in group)
        k = min(max_new_tokens, max(8, int(window) - L + 4))
    else:
        group = list(prompts)
        L = min(int(p.shape[-1]) for p in group)
        k = min(max_new_tokens, 8)
    rows = [p.reshape(-1) for p in group if int(p.shape[-1]) == L][:2]
    if len(rows) == 1:
        rows = rows * 2
    return regime, torch.stack(rows).to(model_device(model)), k


def generation_checks(model, prompts: Sequence[torch.Tensor], *, max_new_tokens: int = 8
                      ) -> dict[str, Callable[[], tuple[float, float, str]]]:
    """One check per fast generation path (``"cache"`` when the model offers one, and
    ``"recompute"``: rows decoded together without a cache): two rows of the shortest
    prompt length decode together (the second stops halfway, so dropping a finished row
    from the batch and its cache is exercised) and every step's logits are compared with
    :func:`decode_definition` of the tokens produced."""
    _, probe, k = _generation_probe(model, prompts, max_new_tokens)
    limits = [k, max(1, k // 2)]
    tok, ends = model.tokenizer, _s.end_token_ids(model)

    def check(use_cache: bool):
        def run():
            record: list[list[torch.Tensor]] = [[] for _ in range(probe.shape[0])]
            with torch.no_grad():
                gens = _decode(model, probe, tok, ends, k, None, use_cache, record=record, row_limits=limits)
            return _compare_with_definition(model, probe, gens, record)
        return run

    out = {}
    if _s._offers_cache(model):
        out["cache"] = check(True)
    out["recompute"] = check(False)
    return out


def _generation_method(model, prompts, kv_cache, batch_size, max_new_tokens) -> str:
    """'cache' or 'recompute', the first (in that order) that reproduces the definition."""
    from .._fastpath import choose

    regime = _generation_probe(model, prompts, max_new_tokens)[0]
    if kv_cache is False and batch_size <= 1:
        return "recompute"  # one prompt at a time without a cache: the definition itself
    checks = generation_checks(model, prompts, max_new_tokens=max_new_tokens)
    if kv_cache is True and "cache" not in checks:
        raise GlassesError("kv_cache=True, but this model returned no key/value cache")
    order = {"auto": ["cache", "recompute"], True: ["cache"], False: ["recompute"]}[kv_cache]
    return choose(model, "generation", regime, [(n, checks[n]) for n in order if n in checks],
                  reference="one prompt at a time, one full forward per step", fallback="recompute")


def decode_definition(model, prompt: torch.Tensor, new_tokens: Sequence[int]) -> torch.Tensor:
    """The logits greedy decoding must have seen: ONE full forward of prompt + the new
    tokens (batch of one, no cache); row ``t`` is the distribution of new token ``t``.
    ``[len(new_tokens), vocab]`` float64."""
    dev = model_device(model)
    toks = torch.cat([prompt.reshape(-1).to(dev), torch.tensor(list(new_tokens), dtype=torch.long, device=dev)])
    with torch.no_grad():
        lg = _s._logits(model, toks[None], len(new_tokens) + 1)[0]
    return lg[: len(new_tokens)].double()


def _compare_with_definition(model, probe, gens, record) -> tuple[float, float, str]:
    from .._core import model_dtype

    rel = 1e-4 if model_dtype(model) in (torch.float32, torch.float64) else 0.06
    pairs = []
    for r, g in enumerate(gens):
        steps = record[r][: len(g.token_ids)]
        if steps:
            pairs.append((torch.stack(steps), decode_definition(model, probe[r], g.token_ids[: len(steps)]),
                          torch.tensor(g.token_ids[: len(steps)])))
    if not pairs:
        raise GlassesError("the generation probe produced no tokens")
    tol = rel * max(1.0, max(float(ref.abs().max()) for _, ref, _ in pairs))
    diff = 0.0
    for got, ref, ids in pairs:
        diff = max(diff, float((got - ref).abs().max()))
        # the token chosen must be the definition's argmax (up to the tolerance)
        picked = ref[torch.arange(len(ids)), ids]
        if bool((picked < ref.max(-1).values - tol).any()):
            diff = float("inf")
    return diff, tol, f"{len(gens)} rows decoded together after a {probe.shape[-1]}-token prompt"


def _decode(model, toks, tok, ends, max_new_tokens, stop, use_cache, *, record=None,
            row_limits=None) -> list[Generation]:
    B = toks.shape[0]
    new: list[list[int]] = [[] for _ in range(B)]
    reason = ["max_new_tokens"] * B
    active = list(range(B))  # rows of the original batch still decoding
    with kv_cache_plumbing(model):
        if not use_cache:
            logits, cache = _s._logits(model, toks, 1), None
        else:
            logits, cache = _s._forward_with_cache(model, toks)
            if cache is None:
                raise GlassesError("kv_cache=True, but this model returned no key/value cache")
        seqs = toks
        for step in range(max_new_tokens):
            last = logits[:, -1]
            nxt = last.argmax(-1)  # [len(active)]
            keep = []
            for r, b in enumerate(active):
                if record is not None:
                    record[b].append(last[r].double().cpu())
                t = int(nxt[r])
                if t in ends:
                    reason[b] = "eos"
                    continue
                new[b].append(t)
                if stop is not None and stop(tok.decode(new[b], skip_special_tokens=True)):
                    reason[b] = "answer"
                    continue
                if row_limits is not None and len(new[b]) >= row_limits[b]:
                    continue
                keep.append(r)
            if not keep or step == max_new_tokens - 1:
                break
            keep_t = torch.tensor(keep, dtype=torch.long, device=toks.device)
            active = [active[r] for r in keep]
            step_toks = nxt[keep_t][:, None]
            if cache is not None:
                if len(keep) != logits.shape[0]:
                    cache.batch_select_indices(keep_t)
                logits, cache = model(step_toks, past_key_values=cache, return_type="logits_and_cache")
            else:
                seqs = torch.cat([seqs[keep_t], step_toks], dim=1)
                logits = _s._logits(model, seqs, 1)
    return [Generation(tok.decode(new[b], skip_special_tokens=True), new[b], reason[b]) for b in range(B)]
