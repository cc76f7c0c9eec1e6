"""The result of :func:`~tl_glasses.tasks.evaluate.evaluate`: :class:`TaskResult`
(per-item rows, summaries per length, the paper's plots, re-reading a run directory)
and the pieces it shares with the runner (:func:`wilson_interval`, the verdict on one
answer).

Everything here is re-exported by :mod:`tl_glasses.tasks.evaluate`, where it always was.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from ..errors import GlassesError, UnknownNameError
from ..results import Result, register_result
from .parsing import parse_answer

__all__ = ["TaskResult", "wilson_interval"]


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
            import math

            from matplotlib.ticker import FixedLocator

            lt = max(10, int(df["n"].max()))
            a.set_yscale("symlog", linthresh=lt)
            # 0, the linear threshold, then every third power of ten: no tick inside the
            # linear part's bottom (a "10⁰" there would sit on top of the "0")
            k0, k1 = math.ceil(math.log10(lt)), math.ceil(math.log10(float(parsed.max())))
            a.yaxis.set_major_locator(FixedLocator([0, lt] + [10.0 ** k for k in range(k0 + 3, k1 + 1, 3)]))
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


def _verdict(pred, answer) -> tuple[bool, float]:
    if pred is None or (isinstance(pred, float) and math.isnan(pred)):
        return False, float("nan")
    err = abs(float(pred) - float(answer))
    return err == 0.0, err
