"""Tables and figures of docs/tasks.md from the runs of docs/tasks_runs.sh.

    python docs/tasks_tables.py [OUT_DIR]      # default out/tasks

Prints markdown tables and writes docs/img/tasks-*.png. Reads only saved results
(``OUT/<model>/<run>/rows.jsonl``): nothing is recomputed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from tl_glasses.tasks.evaluate import TaskResult  # noqa: E402

ROOT = Path(__file__).resolve().parent
MODELS = ["gemma-3-270m", "smollm2-135m"]


def load(out: Path, model: str, pattern: str) -> TaskResult | None:
    parts = []
    for d in sorted((out / model).glob(pattern)):
        if (d / "result" / "meta.json").exists():  # the finished command's own result
            parts.append(TaskResult.load(d / "result"))
            continue
        rows = d / "rows.jsonl"  # a run still going: the rows so far
        if not rows.exists():
            continue
        df = pd.DataFrame([json.loads(x) for x in rows.read_text().splitlines() if x.strip()])
        if len(df):
            cfg = json.loads((d / "config.json").read_text())
            print(f"(partial: {d.name}, {len(df)} rows)")
            parts.append(TaskResult(df=df, meta={**cfg, "model": model}))
    if not parts:
        return None
    r = TaskResult.concat(parts)
    r.df["prediction"] = pd.to_numeric(r.df["prediction"], errors="coerce")
    r.df["abs_error"] = pd.to_numeric(r.df["abs_error"], errors="coerce")
    r.meta["model"] = model
    return r


def md(df: pd.DataFrame, fmt="{:.2f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, [df.index.name or ""] + cols)) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        cells = [fmt.format(v) if isinstance(v, float) and v == v else ("–" if v != v else str(v)) for v in row]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def main(out: Path) -> None:
    img = ROOT / "img"
    img.mkdir(exist_ok=True)
    for model in MODELS:
        print(f"\n## {model}\n")
        copy = load(out, model, "copy*-score")
        if copy is not None:
            s = copy.summary_by_n()
            print("copy, teacher-forced: accuracy\n")
            print(md(s.pivot(index="n", columns="condition", values="accuracy"), "{:.0f}"))
            print("\ncopy, teacher-forced: log-prob margin of the right answer (0)\n")
            print(md(s.pivot(index="n", columns="condition", values="logit_diff")))
            print("\nbest wrong answer:", copy.df.groupby("condition")["best_wrong"].agg(
                lambda x: x.value_counts().to_dict()).to_dict())
            fig = copy.plot()
            fig.savefig(img / f"tasks-copy-score-{model}.png", dpi=100, bbox_inches="tight")
        gen = load(out, model, "copy*-gen")
        if gen is not None:
            s = gen.summary_by_n()
            print("\ncopy, generation: accuracy (unparsed fraction)\n")
            acc = s.pivot(index="n", columns="condition", values="accuracy")
            unp = s.pivot(index="n", columns="condition", values="unparsed")
            print(md(acc.combine(unp, lambda a, u: [f"{x:.0f} ({y:.0%})" for x, y in zip(a, u)]), "{}"))
            print("\nanswers given:", gen.df.groupby("condition")["prediction"].agg(
                lambda x: x.value_counts(dropna=False).to_dict()).to_dict())
            fig = gen.plot()
            fig.savefig(img / f"tasks-copy-gen-{model}.png", dpi=100, bbox_inches="tight")
        count = load(out, model, "count*-score")
        if count is not None:
            s = count.summary_by_n()
            print("\ncounting, teacher-forced: mean absolute error\n")
            print(md(s.pivot(index="n", columns="condition", values="mae"), "{:.1f}"))
            print("\ncounting, teacher-forced: accuracy\n")
            print(md(s.pivot(index="n", columns="condition", values="accuracy")))
            h = count.answer_histogram()
            print("\nteacher-forced answers, all counting runs:", h.head(6).to_dict("records"))
            h50 = count.answer_histogram(min_n=50)
            print("teacher-forced answers, n >= 50:", h50.head(6).to_dict("records"))
            fig = count.plot(kind="error")
            fig.set_size_inches(9, 5)
            fig.savefig(img / f"tasks-count-score-{model}.png", dpi=100, bbox_inches="tight")
        cgen = load(out, model, "count*-gen")
        if cgen is not None:
            s = cgen.summary_by_n()
            print("\ncounting, generation: MAE / accuracy / unparsed\n")
            print(md(s.pivot(index="n", columns="condition", values="mae"), "{:.1f}"))
            print()
            print(md(s.pivot(index="n", columns="condition", values="unparsed")))
            print("\nparse status:", cgen.df.groupby("condition")["parse_status"].agg(
                lambda x: x.value_counts().to_dict()).to_dict())
            h = cgen.answer_histogram()
            print("generated answers, all counting runs:", h.head(8).to_dict("records"))
            print("generated answers, n >= 50:", cgen.answer_histogram(min_n=50).head(6).to_dict("records"))
            fig = cgen.plot(kind="histogram")
            fig.savefig(img / f"tasks-count-hist-{model}.png", dpi=100, bbox_inches="tight")
            fig = cgen.plot(kind="error")
            fig.set_size_inches(9, 5)
            fig.savefig(img / f"tasks-count-gen-{model}.png", dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/tasks"))
