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
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from .._core import model_dtype, n_ctx, require_eval
from ..errors import ContextLengthError, GlassesError, TokenizationError, UnknownNameError
from ..results import Result, register_result
from ..sweeps import RowStore
from . import scoring as S
from .generators import MODES, Task, TaskItem, get_task, parse_lengths
from .parsing import parse_answer
from .tokenization import TokenizedItems, token_strings, tokenize_items

__all__ = ["evaluate", "TaskResult", "tokenization_report", "SCORINGS", "prepare_item"]

SCORINGS = ("score", "generate")
DEFAULT_MAX_NEW_TOKENS = {"answer": 32, "cot": 192, "cot_fewshot": 192}


def _model_name(model) -> str:
    from ..models import model_info

    info = model_info(model)
    return str(info.get("name") or getattr(model.cfg, "model_name", None) or type(model).__name__)


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


# --- the result ------------------------------------------------------------------------
@register_result
@dataclass(repr=False)
class TaskResult(Result):
    """Per-item results of :func:`evaluate` (``.df``: one row per item) with summaries
    per length and the paper's plots (Fig. 2: accuracy vs n; Fig. 3: absolute error vs
    n; Fig. 4: histogram of answers)."""

    title = "task evaluation"

    @property
    def kind(self) -> str:
        kinds = set(self.df["kind"]) if "kind" in self.df else set()
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def conditions(self) -> list[str]:
        return list(dict.fromkeys(self.df["condition"])) if len(self.df) else []

    def summary_by_n(self) -> pd.DataFrame:
        """Per condition and length: items, accuracy with its 95% Wilson interval
        (``accuracy_lo``, ``accuracy_hi``), mean absolute error (over parsed
        answers), unparsed fraction; for teacher-forced scoring also the mean probability
        of the right answer, mean log-prob margin to the best wrong answer and median rank."""
        df = self.df
        if not len(df):
            return pd.DataFrame()
        rows = []
        for (cond, n), g in df.groupby(["condition", "n"], sort=False):
            parsed = g["prediction"].notna()
            lo, hi = wilson_interval(int(g["correct"].sum()), len(g))
            r = dict(condition=cond, n=int(n), items=len(g), accuracy=float(g["correct"].mean()),
                     accuracy_lo=lo, accuracy_hi=hi,
                     mae=float(g.loc[parsed, "abs_error"].mean()) if parsed.any() else float("nan"),
                     unparsed=float((~parsed).mean()))
            if "logit_diff" in g and g["logit_diff"].notna().any():
                r.update(p_answer=float(g["p_answer"].mean()), logit_diff=float(g["logit_diff"].mean()),
                         median_rank=float(g["rank"].median()))
            rows.append(r)
        return pd.DataFrame(rows).sort_values(["condition", "n"], kind="stable").reset_index(drop=True)

    def answer_histogram(self, *, by_condition: bool = False, min_n: int | None = None) -> pd.DataFrame:
        """How often each answer was given (parsed predictions only), most common first:
        the paper's Fig. 4 ("100 is by far the most common response"). ``min_n`` keeps
        only lengths >= min_n."""
        df = self.df
        if min_n is not None:
            df = df[df["n"] >= min_n]
        df = df[df["prediction"].notna()]
        keys = (["condition"] if by_condition else []) + ["prediction"]
        if not len(df):
            return pd.DataFrame(columns=keys + ["count", "fraction"])
        h = df.groupby(keys).size().rename("count").reset_index()
        total = h.groupby("condition")["count"].transform("sum") if by_condition else h["count"].sum()
        h["fraction"] = h["count"] / total
        h["prediction"] = h["prediction"].map(lambda v: int(v) if float(v).is_integer() else v)
        return h.sort_values((["condition"] if by_condition else []) + ["count"],
                             ascending=[True] * by_condition + [False], kind="stable").reset_index(drop=True)

    def summary(self) -> str:
        if not len(self.df):
            return "no items"
        s = self.summary_by_n()
        ns = sorted(set(self.df["n"]))
        acc = self.df["correct"].mean()
        unp = self.df["prediction"].isna().mean()
        conds = self.conditions
        what = conds[0] if len(conds) == 1 else f"{len(conds)} conditions"
        scor = ",".join(sorted(set(self.df["scoring"])))
        extra = ""
        if self.kind == "count":
            extra = f", MAE {s['mae'].mean():.3g}"
        return (f"{what} ({scor}): accuracy {acc:.2f} over {len(self.df)} items, n={ns[0]}..{ns[-1]}"
                f"{extra}, {unp:.0%} unparsed")

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, *, n_items: int | None = None,
                 reparse: bool = True) -> "TaskResult":
        """The rows an ``evaluate(..., out=directory)`` run has written so far
        (``directory/rows.jsonl``, finished or not), without the model. ``n_items`` keeps
        items ``0..n_items-1`` of each length only (a directory that an earlier call with
        more items also wrote to holds more). ``reparse``: read generated texts again with
        the current :func:`~tl_glasses.tasks.parsing.parse_answer` (the rows keep what the
        parser of their day read). Raises if the directory holds no rows."""
        from pathlib import Path

        d = Path(directory)
        try:
            config = json.loads((d / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GlassesError(f"{str(d)!r} is not a tl_glasses.evaluate results directory: {exc}") from exc
        path = d / "rows.jsonl"
        rows = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
        if not rows:
            raise GlassesError(f"{str(d)!r} holds no rows yet")
        df = pd.DataFrame(rows).drop_duplicates(subset=["n", "item"], keep="first")
        if n_items is not None:
            df = df[df["item"] < int(n_items)]
        df = df.sort_values(["n", "item"], kind="stable").reset_index(drop=True)
        if reparse and "generation" in df:
            for i in df.index:
                p = parse_answer(df.at[i, "generation"])
                ok, err = _verdict(p.value, df.at[i, "answer"])
                df.at[i, "prediction"], df.at[i, "parse_status"] = p.value, p.status
                df.at[i, "correct"], df.at[i, "abs_error"] = ok, err
        for col in ("prediction", "abs_error"):
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        df["correct"] = df["correct"].astype(bool)
        return cls(df=df, meta={**config, "out": str(d)})

    @classmethod
    def concat(cls, results: Iterable["TaskResult"]) -> "TaskResult":
        """One result holding several (e.g. copy_last and copy_first, or the three modes),
        plotted side by side."""
        results = list(results)
        if not results:
            raise GlassesError("concat needs at least one result")
        df = pd.concat([r.df for r in results], ignore_index=True)
        return cls(df=df, meta={"parts": [r.meta for r in results],
                                "model": ", ".join(dict.fromkeys(str(r.meta.get("model")) for r in results))})

    # -- plots -------------------------------------------------------------------------
    def plot(self, ax=None, kind: str = "auto"):
        """``kind``: 'accuracy' (Fig. 2), 'error' (Fig. 3), 'histogram' (Fig. 4),
        'margin' (teacher-forced log-prob margin of the right answer vs n) or 'auto'
        (copying: accuracy and margin; counting: error and histogram). Returns the Figure."""
        import matplotlib.pyplot as plt

        kinds = {"accuracy", "error", "histogram", "margin"}
        tasks = list(dict.fromkeys(self.df["task"])) if len(self.df) else []
        if kind == "auto":
            scored = "logit_diff" in self.df and self.df["logit_diff"].notna().any()
            if self.kind == "count":
                panels = ["error", "histogram"]
            else:
                panels = ["accuracy", "margin" if scored else "unparsed"]
        elif kind in kinds:
            panels = [kind]
        else:
            raise UnknownNameError("plot kind", kind, sorted(kinds) + ["auto"])
        # several counting tasks: one error panel per task, lines per mode (Fig. 3's layout)
        per_task = ax is None and "error" in panels and len(tasks) > 1
        if per_task:
            panels = [("error", t) for t in tasks] + [p for p in panels if p != "error"]
        if ax is not None:
            panels = panels[:1]
            axes = [ax]
            fig = ax.figure
        else:
            ncols = min(3, len(panels))
            nrows = -(-len(panels) // ncols)
            fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
            axes = list(grid.ravel())
            for extra in axes[len(panels):]:
                extra.set_visible(False)
        for a, p in zip(axes, panels):
            if isinstance(p, tuple):
                self._plot_error(a, task=p[1])
            else:
                getattr(self, f"_plot_{p}")(a)
        model = self.meta.get("model", "")
        if ax is None:
            fig.suptitle(f"{model}", fontsize=10)
            fig.tight_layout()
        return fig

    def _xscale(self, a):
        """The same x scale for n in every panel of a figure: log when the lengths span
        50x or more, with plain integer tick labels (1, 10, 100, 1000) and no minor labels."""
        from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

        ns = sorted(set(self.df["n"]))
        if ns and ns[0] > 0 and ns[-1] / ns[0] >= 50:
            a.set_xscale("log")
            a.xaxis.set_major_locator(LogLocator(base=10))
            a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
            a.xaxis.set_minor_formatter(NullFormatter())
            a.set_xlim(ns[0] / 1.3, ns[-1] * 1.3)
        else:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ns:
                pad = max(0.5, 0.04 * (ns[-1] - ns[0]))
                a.set_xlim(ns[0] - pad, ns[-1] + pad)
        a.set_xlabel("sequence length n (items)")

    def _plot_accuracy(self, a):
        s = self.summary_by_n()
        banded = False
        for cond, g in s.groupby("condition", sort=False):
            (line,) = a.plot(g["n"], g["accuracy"], marker="o", ms=4, label=cond)
            if "accuracy_lo" in g and (g["items"] > 1).any():
                a.fill_between(g["n"], g["accuracy_lo"], g["accuracy_hi"], color=line.get_color(), alpha=0.15,
                               linewidth=0)
                banded = True
        a.set_ylim(-0.05, 1.05)
        a.set_ylabel("accuracy")
        a.set_title("accuracy vs length" + (" (bands: 95% Wilson)" if banded else ""))
        self._xscale(a)
        a.legend(fontsize=7)

    def _plot_unparsed(self, a):
        s = self.summary_by_n()
        for cond, g in s.groupby("condition", sort=False):
            a.plot(g["n"], g["unparsed"], marker="o", ms=4, label=cond)
        a.set_ylim(-0.05, 1.05)
        a.set_ylabel("unparsed fraction")
        a.set_title("answers that could not be read")
        self._xscale(a)

    def _plot_margin(self, a):
        s = self.summary_by_n()
        for cond, g in s.groupby("condition", sort=False):
            if "logit_diff" in g:
                a.plot(g["n"], g["logit_diff"], marker="o", ms=4, label=cond)
        a.axhline(0, color="k", lw=0.8)
        a.set_ylabel("log P(right) − max log P(wrong) (nats)")
        a.set_title("teacher-forced margin (> 0: right answer wins)")
        self._xscale(a)
        a.legend(fontsize=7)

    def _plot_error(self, a, task: str | None = None):
        s = self.summary_by_n()
        df = self.df
        if task is not None:
            keep = set(df.loc[df["task"] == task, "condition"])
            s = s[s["condition"].isin(keep)]
        for cond, g in s.groupby("condition", sort=False):
            label = cond if task is None else (cond.split(" · ", 1)[1] if " · " in cond else "answer")
            line, = a.plot(g["n"], g["mae"], marker="o", ms=4, label=label)
            pts = df[(df["condition"] == cond) & df["prediction"].notna()]
            a.scatter(pts["n"], pts["abs_error"], s=6, alpha=0.3, color=line.get_color())
        a.set_ylabel("|answer − right count| (items)")
        parsed = df.loc[df["condition"].isin(set(s["condition"])) & df["prediction"].notna(), "abs_error"]
        if len(parsed) and parsed.max() > 100 * max(1, df["n"].max()):
            # a model echoing the sequence ("1111…") is read as a huge number: keep the rest visible
            from matplotlib.ticker import SymmetricalLogLocator

            lt = max(10, int(df["n"].max()))
            a.set_yscale("symlog", linthresh=lt)
            a.yaxis.set_major_locator(SymmetricalLogLocator(base=1000, linthresh=lt))
        a.set_title("absolute error vs length (line: mean, dots: items)" if task is None
                    else f"{task} (line: mean, dots: items)")
        self._xscale(a)
        a.legend(fontsize=7)

    def _plot_histogram(self, a):
        h = self.answer_histogram()
        if len(h):
            vals = h["prediction"].astype(float)
            label = [f"{v:.0f}" if v.is_integer() and abs(v) < 1e6 else f"{v:.2g}" for v in vals]
            if vals.abs().max() > 10 * max(100, int(self.df["n"].max())):
                # answers far off any count (echoed sequences): one bar per answer, 15 most common
                k = min(15, len(h))
                a.bar(range(k), h["count"].iloc[:k], width=0.8)
                a.set_xticks(range(k), label[:k], rotation=60, fontsize=7)
            else:
                from matplotlib.ticker import MaxNLocator

                a.bar(vals, h["count"], width=0.8 if vals.max() - vals.min() < 60 else 1.0)
                a.xaxis.set_major_locator(MaxNLocator(integer=True))
            a.set_title(f"answers given (most common: {label[0]}, {h['fraction'].iloc[0]:.0%})")
        else:
            a.set_title("answers given (none parsed)")
        from matplotlib.ticker import MaxNLocator

        a.yaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("predicted answer")
        a.set_ylabel("items (count)")


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
    store = RowStore(out, config, key=["n", "item"]) if out is not None else None
    rows: dict[tuple[int, int], dict] = {}
    if store is not None:
        for r in store.rows:
            rows[(int(r["n"]), int(r["item"]))] = r
    wanted = [(it.n, it.index) for it in items]
    todo = [it for it in items if (it.n, it.index) not in rows]
    condition = t.condition(mode, **opts)
    common = dict(task=t.name, kind=t.kind, condition=condition, mode=mode, scoring=scoring)
    from tqdm.auto import tqdm

    step = max(1, int(batch_size))
    chunks = [todo[s: s + step] for s in range(0, len(todo), step)]
    for chunk in tqdm(chunks, desc=f"{condition} ({scoring})", disable=not progress or not chunks, leave=False):
        if scoring == "score":
            new = _score_chunk(model, t, chunk, chat=chat, terminate=terminate, batch_size=batch_size,
                               method=method)
        else:
            new = _generate_chunk(model, chunk, chat=chat, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, kv_cache={"recompute": False, "cache": True}.get(method, "auto"))
        for it, r in zip(chunk, new):
            row = {**common, "n": it.n, "item": it.index, "prompt": it.prompt, "answer": it.answer, **r}
            if store is not None:
                store.append(row)
            rows[(it.n, it.index)] = row
    df = pd.DataFrame([rows[k] for k in wanted])
    for col in ("prediction", "abs_error"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["correct"] = df["correct"].astype(bool)
    meta = {**config, "lengths": lengths, "n_items": len(items) // len(lengths),
            "template": items[0].template, "model_input_template": text0,
            "answer_prefix": t.answer_prefix, "out": str(out) if out is not None else None,
            "versions": _versions()}
    return TaskResult(df=df, meta=meta)


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval (95% by default) for ``k`` successes in ``n`` trials:
    well-behaved at 0/n and n/n, where the normal interval collapses to a point."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _versions() -> dict[str, str]:
    from .._fastpath import versions

    return versions()


def _verdict(pred, answer) -> tuple[bool, float]:
    if pred is None or (isinstance(pred, float) and math.isnan(pred)):
        return False, float("nan")
    err = abs(float(pred) - float(answer))
    return err == 0.0, err


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
