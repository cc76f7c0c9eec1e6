"""Tables and figures of the "Measured on the embedded models" section of docs/tasks.md,
from the committed runs of docs/tasks_runs.sh (``findings/<model>/<run>/rows.jsonl``).

    python docs/tasks_tables.py            # print the generated blocks
    python docs/tasks_tables.py --write    # rewrite them in docs/tasks.md, redraw docs/img/tasks-*.png
    python docs/tasks_tables.py --check    # exit 1 when a table of docs/tasks.md differs from the data

Needs no model. A block sits between ``<!-- tasks:NAME -->`` and ``<!-- /tasks:NAME -->``;
a run that was not made, or has no row yet, shows as "not run".
"""
from __future__ import annotations

import sys
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from tl_glasses.tasks.evaluate import TaskResult  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _doc_blocks as doc_blocks  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("TL_TASKS_OUT", REPO / "findings"))
IMG = Path(os.environ.get("TL_TASKS_IMG", REPO / "docs" / "img"))
DOC = REPO / "docs" / "tasks.md"
# the lengths the commands of docs/tasks_runs.sh ask for (the run directories, shared with
# docs/runs.sh, can hold more)
COPY_L = [2, 5, 10, 20, 50, 100, 150, 200, 300]
COUNT_L = [2, 5, 10, 20, 30, 50, 75, 100]
COPY_GEN_L = [5, 20, 50, 100, 200]
MODELS = ["smollm2-135m", "gemma-3-270m"]
COPY_RUNS = ["copy_last-score", "copy_first-score", "copy_last-hint-score", "copy_first-hint-score",
             "copy_last-alt-score", "copy_first-alt-score", "copy_last-type1-score", "copy_last-type2-score"]
COPY_GEN = ["copy_last-gen", "copy_first-gen", "copy_last-hint-gen", "copy_first-hint-gen",
            "copy_last-alt-gen", "copy_first-alt-gen"]
COUNT = ["count_sum", "count_ones", "count_ones_zeros", "count_word"]
MODES = ["answer", "cot", "cot_fewshot"]


def load(model, run, lengths=None):
    d = ROOT / model / run
    try:
        # --n-items 3 in the commands; a directory shared with docs/runs.sh holds up to 10 items
        r = TaskResult.from_dir(d, n_items=3)
    except Exception:  # noqa: BLE001 - not run (or no row yet): reported as such
        return None
    if lengths is not None:
        r.df = r.df[r.df["n"].isin(lengths)].reset_index(drop=True)
    return r


def num(v):
    if pd.isna(v):
        return "–"
    v = float(v)
    if v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    if v.is_integer() or abs(v) >= 1e6:
        k = len(f"{v:.0f}")  # a run of ones read as one number (the model echoing the sequence)
        if abs(v - (10 ** k - 1) / 9) <= 1e-9 * v:
            return f"1…1 ({k} ones)"
        return f"{v:.2g}"
    return f"{v:.3g}"


def table(rows, cols, head):
    return doc_blocks.md_table([head] + [str(c) for c in cols], [[name] + cells for name, cells in rows])


def copy_tables(model, draw):
    o = []
    rows, res = [], []
    ns = COPY_L
    for run in COPY_RUNS:
        r = load(model, run, COPY_L)
        if r is None:
            rows.append((run, ["not run"]))
            continue
        res.append(r)
        df = r.df.set_index("n")
        cells = []
        for n in ns:
            if n not in df.index:
                cells.append("not run")
                continue
            x = df.loc[n]
            cells.append(("**✓** " if x["correct"] else "") + f"{x['logit_diff']:+.2f}"
                         + ("" if x["prediction"] in (0, 1) else f" ({num(x['prediction'])})"))
        rows.append((f"`{r.conditions[0]}`", cells))
    o.append(f"\n**{model}, teacher-forced** (one item per cell; the cell is log P(0) − max log P(other "
          f"digit); ✓: 0 wins; otherwise the winning digit is 1 unless shown in brackets)\n")
    o.append(table(rows, ns, "condition \\ n"))
    if res and draw:
        fig = TaskResult.concat(res).plot()
        fig.suptitle(f"{model}: copying, teacher-forced", fontsize=10)
        fig.savefig(IMG / f"tasks-copy-score-{model}.png", dpi=100, bbox_inches="tight")
    rows, ns = [], COPY_GEN_L
    for run in COPY_GEN:
        r = load(model, run)
        if r is None:
            rows.append((run, ["not run"]))
            continue
        df = r.df.set_index("n")
        rows.append((f"`{r.conditions[0]}`", [
            ("**✓** " if df.loc[n, "correct"] else "") + num(df.loc[n, "prediction"]) if n in df.index
            else "not run" for n in ns]))
    o.append(f"\n**{model}, generation** (greedy, ≤ 24 new tokens, one item per cell; the cell is the parsed "
          f"answer, – where nothing could be read; the right answer is 0)\n")
    o.append(table(rows, ns, "condition \\ n"))
    return "\n".join(o)


def count_tables(model, draw):
    o = []
    rows, res, ns = [], [], None
    for task in COUNT:
        for mode in MODES:
            r = load(model, f"{task}-{mode}-score", COUNT_L)
            if r is None:
                rows.append((f"`{task}` {mode}", ["not run"]))
                continue
            res.append(r)
            s = r.summary_by_n().set_index("n")
            ns = COUNT_L
            k = sorted(set(s["items"]))
            top = r.answer_histogram().head(1)
            common = f"{top['prediction'].iloc[0]} ({top['fraction'].iloc[0]:.0%})"
            rows.append((f"`{task}` {mode}", [num(s.loc[n, "mae"]) if n in s.index else "–" for n in ns]
                         + [f"{s['accuracy'].mean():.2f}", common, "/".join(map(str, k))]))
    o.append(f"\n**{model}, teacher-forced**: mean absolute error per n\n")
    o.append(table(rows, (ns or []) + ["accuracy", "most common answer", "items/cell"], "task, mode \\ n"))
    if res and draw:
        fig = TaskResult.concat(res).plot()
        fig.suptitle(f"{model}: counting, teacher-forced (lines: mean absolute error per mode)", fontsize=10)
        fig.savefig(IMG / f"tasks-count-score-{model}.png", dpi=100, bbox_inches="tight")
    return "\n".join(o), res


def count_gen_tables(model, draw):
    o = []
    rows, res, ns = [], [], [5, 10, 20, 50, 100]
    for mode in MODES:
        for task in COUNT:
            r = load(model, f"{task}-{mode}-gen")
            if r is None:
                rows.append((f"`{task}` {mode}", ["not run"] + [""] * (len(ns) + 1)))
                continue
            res.append(r)
            df = r.df
            cells = []
            for n in ns:
                g = df[df["n"] == n]
                if not len(g):
                    cells.append("not run")
                    continue
                cells.append(", ".join(("**✓** " if c else "") + num(p)
                                       for p, c in zip(g["prediction"], g["correct"])))
            st = df["parse_status"].value_counts()
            cells.append(f"{(df['prediction'].isna()).mean():.0%}")
            cells.append(", ".join(f"{k} {v}" for k, v in st.items()))
            rows.append((f"`{task}` {mode}", cells))
    o.append(f"\n**{model}, generation** (greedy; ≤ 24 new tokens for `answer`, ≤ 128 for the CoT modes): "
          f"the parsed answers per n, ✓ where right, – where nothing could be read (right answers: n for "
          f"the sum and the run of ones, about 0.7 n and 0.5 n for the random tasks)\n")
    o.append(table(rows, ns + ["unparsed", "parse status"], "task, mode \\ n"))
    if res and draw:
        fig = TaskResult.concat(res).plot()
        fig.suptitle(f"{model}: counting, generation (parsed answers only)", fontsize=10)
        fig.savefig(IMG / f"tasks-count-gen-{model}.png", dpi=100, bbox_inches="tight")
    return "\n".join(o), res


def histograms(model, score, gen):
    o = []
    o.append(f"\n**{model}**: most common answers over all counting items (share of answers read)\n")
    lines = []
    for name, res in (("teacher-forced, 3 modes", score), ("teacher-forced, n ≥ 50", score),
                      ("generation, parsed", gen)):
        if not res:
            lines.append((name, ["not run", "", ""]))
            continue
        r = TaskResult.concat(res)
        h = r.answer_histogram(min_n=50 if "≥" in name else None)
        total = int(h["count"].sum())
        top = ", ".join(f"{p} ({f:.0%})" for p, f in zip(h["prediction"].head(5), h["fraction"].head(5)))
        share100 = float(h.loc[h["prediction"] == 100, "fraction"].sum())
        lines.append((name, [str(total), top, f"{share100:.0%}"]))
    o.append(table(lines, ["answers", "top 5", "answer 100"], "which items"))
    return "\n".join(o)


def blocks(draw: bool) -> dict[str, str]:
    out, score, gen = {}, {}, {}
    for model in MODELS:
        out[f"copying-{model}"] = copy_tables(model, draw)
    for model in MODELS:
        out[f"counting-{model}"], score[model] = count_tables(model, draw)
    for model in MODELS:
        out[f"counting-gen-{model}"], gen[model] = count_gen_tables(model, draw)
    for model in MODELS:
        out[f"answers-{model}"] = histograms(model, score[model], gen[model])
    return out


def main(argv: list[str]) -> int:
    return doc_blocks.run(argv, doc=DOC, prefix="tasks", blocks=lambda draw: blocks(draw=draw),
                          generator="docs/tasks_tables.py", usage=__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
