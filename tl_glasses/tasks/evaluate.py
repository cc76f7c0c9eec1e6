"""Run a task on a model over sequence lengths: ``tl_glasses.evaluate``.

::

    import tl_glasses as tg
    model = tg.load_model("smollm2-135m")
    res = tg.evaluate(model, "copy_last", [2, 10, 50, 100, 200])            # teacher-forced
    res = tg.evaluate(model, "count_sum", [5, 20, 100], mode="cot", scoring="generate",
                      max_new_tokens=128, out="runs/sum_cot")               # resumable
    res.df; res.summary_by_n(); res.answer_histogram(); res.plot()

Every item's prompt is tokenised with
:func:`~tl_glasses.tasks.tokenization.tokenize_items`, which checks that each item of
the sequence (digit, "1" of the sum, word) is one token of its own and refuses, with a
message naming a separator that works, a configuration where the tokenizer merges
them. How the items tokenised is recorded per row (``item_tokens``, ``n_tokens``);
:func:`tokenization_report` shows it without running the model.

Layout: this module is the runner; the result (:class:`TaskResult`, its summaries and
plots) and :func:`wilson_interval` are in :mod:`~tl_glasses.tasks._task_result`,
re-exported here, where they always were.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._core import model_dtype, n_ctx, require_eval
from ..errors import ContextLengthError, TokenizationError, UnknownNameError
from ..sweeps import run_rows
from . import scoring as S
# re-exported: importing this module registers TaskResult, so results saved before the
# split (module tl_glasses.tasks.evaluate) still load
from ._task_result import TaskResult, _verdict, wilson_interval
from .generators import MODES, Task, TaskItem, get_task, parse_lengths
from .parsing import parse_answer
from .tokenization import TokenizedItems, token_strings, tokenize_items

__all__ = ["evaluate", "TaskResult", "tokenization_report", "SCORINGS", "prepare_item"]

SCORINGS = ("score", "generate")
DEFAULT_MAX_NEW_TOKENS = {"answer": 32, "cot": 192, "cot_fewshot": 192}


from .._vocab import model_name as _model_name  # noqa: E402


def prepare_item(model, item: TaskItem, *, chat: bool | str = "auto", with_prefix: bool = False) -> TokenizedItems:
    """The tokens the model reads for ``item`` (chat-wrapped if asked), checked so that
    every item of the sequence is one token; ``with_prefix`` appends the answer prefix
    (teacher-forced scoring): right where the assistant's turn starts in a chat
    text, on a new line after a plain-text prompt."""
    text, prepend_bos, chat_used = S.chat_template(model, item.template, chat)
    if with_prefix:
        # a chat text ends where the assistant's turn starts; plain text gets a new line
        text = text + ("" if chat_used else "\n") + item.answer_prefix
    try:
        tk = tokenize_items(model, text, item.items, sep=item.sep, prepend_bos=prepend_bos)
    except TokenizationError as exc:
        how = (" Pass the separator as a task option: evaluate(..., sep=...) or "
               f"get_task({item.task!r}).items(..., sep=...)") if "try sep=" in str(exc) else ""
        raise TokenizationError(f"task {item.task!r}, n={item.n}: {exc}.{how}") from None
    ctx = n_ctx(model)
    if ctx is not None and tk.n_tokens + (0 if with_prefix else 1) > ctx:
        raise ContextLengthError(
            f"task {item.task!r}, n={item.n}: the prompt has {tk.n_tokens} tokens but the model's "
            f"context is {ctx}; use shorter lengths"
        )
    return tk


def _item_token_summary(model, tk: TokenizedItems) -> str:
    strs = token_strings(model, tk.tokens[tk.item_positions])
    return " ".join(sorted(set(strs)))


def tokenization_report(model, task: str | Task, lengths, *, mode: str = "answer", chat: bool | str = "auto",
                        n_items: int = 1, seed: int = 0, with_prefix: bool = False, **options) -> pd.DataFrame:
    """How each item's prompt tokenises, without running the model: one row per item
    with the prompt's token count, the item count, the distinct item tokens and whether
    each item is one token (``ok``; ``message`` says what merged otherwise)."""
    t = get_task(task)
    rows = []
    for it in t.items(lengths, n_items=n_items, seed=seed, mode=mode, **options):
        row = dict(task=t.name, n=it.n, item=it.index, sep=it.sep, n_items=len(it.items))
        try:
            tk = prepare_item(model, it, chat=chat, with_prefix=with_prefix)
        except (TokenizationError, ContextLengthError) as exc:
            rows.append({**row, "ok": False, "n_tokens": None, "item_tokens": None,
                         "first_item_position": None, "last_item_position": None, "message": str(exc)})
            continue
        rows.append({**row, "ok": True, "n_tokens": tk.n_tokens, "item_tokens": _item_token_summary(model, tk),
                     "first_item_position": tk.item_positions[0], "last_item_position": tk.item_positions[-1],
                     "message": "one token per item"})
    return pd.DataFrame(rows)


# --- evaluation ---------------------------------------------------------------------------
def evaluate(
    model,
    task: str | Task,
    lengths,
    *,
    mode: str = "answer",
    scoring: str = "score",
    n_items: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    chat: bool | str = "auto",
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    terminate: bool = True,
    method: str = "auto",
    progress: bool = True,
    options: dict[str, Any] | None = None,
    **task_options: Any,
) -> TaskResult:
    """Run ``task`` on ``model`` for each length in ``lengths``.

    ``mode``: 'answer', 'cot' or 'cot_fewshot'. ``scoring``: 'score' (teacher-forced:
    the answer prefix is appended and candidate answers are ranked by log-probability;
    see :mod:`tl_glasses.tasks.scoring`) or 'generate' (greedy decoding, at most
    ``max_new_tokens`` (default 32 for 'answer', 192 for the CoT modes), then
    :func:`~tl_glasses.tasks.parsing.parse_answer`). ``n_items`` items per length for the random
    tasks (default 5; the deterministic tasks have one item per length), seeded by ``seed``. Task
    options (``hint=True``, ``alternating=True``, ``prompt_type=1``, ``sep=' '``,
    ``p=0.7``, ``max_candidate=...``) go as keywords or ``options=``.

    ``out``: a directory where every row is appended as soon as it is computed;
    running the same call again resumes (done items are not recomputed; a directory
    written by a different configuration is refused). ``chat``: wrap the prompt in the
    tokenizer's chat template ('auto': when it has one). ``method``: how candidates are
    scored ('auto', 'tree', 'cache', 'recompute'; see
    :func:`~tl_glasses.tasks.scoring.score_candidates`; all give the same numbers);
    'recompute' also makes generation run without the key/value cache.
    """
    require_eval(model)
    t = get_task(task)
    if mode not in MODES:
        raise UnknownNameError("mode", mode, MODES)
    if scoring not in SCORINGS:
        raise UnknownNameError("scoring", scoring, SCORINGS)
    opts = t.options(**{**(options or {}), **task_options})
    lengths = parse_lengths(lengths)
    items = t.items(lengths, n_items=n_items, seed=seed, mode=mode, **opts)
    text0, _, chat_used = S.chat_template(model, items[0].template, chat)
    if scoring == "generate":
        max_new_tokens = int(max_new_tokens or DEFAULT_MAX_NEW_TOKENS[mode])
    config = dict(
        kind="tl_glasses.evaluate", model=_model_name(model), dtype=str(model_dtype(model)), task=t.name,
        options={k: v for k, v in opts.items()}, mode=mode, scoring=scoring, seed=int(seed), chat=chat_used,
        terminate=bool(terminate) if scoring == "score" else None,
        max_new_tokens=max_new_tokens if scoring == "generate" else None,
    )
    condition = t.condition(mode, **opts)
    common = dict(task=t.name, kind=t.kind, condition=condition, mode=mode, scoring=scoring)
    by_key = {(it.n, it.index): it for it in items}
    kv_cache = {"recompute": False, "cache": True}.get(method, "auto")

    def compute(stubs: list[dict]) -> list[dict]:
        chunk = [by_key[(s["n"], s["item"])] for s in stubs]
        if scoring == "score":
            return _score_chunk(model, t, chunk, chat=chat, terminate=terminate, batch_size=batch_size,
                                method=method)
        return _generate_chunk(model, chunk, chat=chat, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, kv_cache=kv_cache)

    stubs = [{**common, "n": it.n, "item": it.index, "prompt": it.prompt, "answer": it.answer} for it in items]
    df = run_rows(stubs, compute, out=out, config=config, key=["n", "item"], desc=f"{condition} ({scoring})",
                  progress=progress, batch=batch_size)
    for col in ("prediction", "abs_error"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["correct"] = df["correct"].astype(bool)
    meta = {**config, "lengths": lengths, "n_items": len(items) // len(lengths),
            "template": items[0].template, "model_input_template": text0,
            "answer_prefix": t.answer_prefix, "out": str(out) if out is not None else None,
            "versions": _versions()}
    return TaskResult(df=df, meta=meta)


def _versions() -> dict[str, str]:
    from .._fastpath import versions

    return versions()


def _score_chunk(model, t: Task, chunk: list[TaskItem], *, chat, terminate, batch_size, method) -> list[dict]:
    prepared = [prepare_item(model, it, chat=chat, with_prefix=True) for it in chunk]
    cand_values = [t.candidates(it.n, **it.metadata["options"]) for it in chunk]
    cand_ids, canon = [], []
    for tk, vals in zip(prepared, cand_values):
        ids, c = S.candidate_token_ids(model, tk.text, tk.tokens, [str(v) for v in vals])
        cand_ids.append(ids)
        canon.append(c)
    scores = S.score_candidates(model, [tk.tokens for tk in prepared], cand_ids, terminate=terminate,
                                batch_size=batch_size, method=method)
    out = []
    for it, tk, vals, lp, c in zip(chunk, prepared, cand_values, scores, canon):
        sc = S.ScoredCandidates([str(v) for v in vals], lp, [], c)
        ai = vals.index(it.answer)
        best = sc.best()
        pred = vals[best]
        correct, err = _verdict(pred, it.answer)
        others = [j for j in range(len(vals)) if j != ai]
        bw = others[int(torch.argmax(lp[others]))] if others else None
        top = torch.argsort(lp, descending=True)[:5].tolist()
        out.append(dict(
            prediction=pred, correct=correct, abs_error=err, parse_status="scored",
            logp_answer=float(lp[ai]), p_answer=float(math.exp(lp[ai])), rank=sc.rank_of(ai),
            logit_diff=sc.margin(ai), best_wrong=vals[bw] if bw is not None else None,
            top=[vals[j] for j in top], n_candidates=len(vals), canonical=c,
            n_tokens=tk.n_tokens, item_tokens=_item_token_summary(model, tk),
            first_item_position=tk.item_positions[0], last_item_position=tk.item_positions[-1],
        ))
    return out


def _generate_chunk(model, chunk: list[TaskItem], *, chat, max_new_tokens, batch_size, kv_cache) -> list[dict]:
    prepared = [prepare_item(model, it, chat=chat, with_prefix=False) for it in chunk]
    gens = S.generate_greedy(model, [tk.tokens for tk in prepared], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, kv_cache=kv_cache)
    out = []
    for it, tk, g in zip(chunk, prepared, gens):
        p = parse_answer(g.text)
        correct, err = _verdict(p.value, it.answer)
        out.append(dict(
            prediction=p.value, correct=correct, abs_error=err, parse_status=p.status,
            generation=g.text, n_new_tokens=g.n_new_tokens, stop_reason=g.stop_reason,
            n_tokens=tk.n_tokens, item_tokens=_item_token_summary(model, tk),
            first_item_position=tk.item_positions[0], last_item_position=tk.item_positions[-1],
        ))
    return out
