#!/usr/bin/env bash
# The exact runs behind the measured tables of docs/tasks.md (Figs. 2-4 on the two
# embedded models). Usage:  bash docs/tasks_runs.sh MODEL [PART...]
#   MODEL: smollm2-135m or gemma-3-270m
#   PART:  copy-score copy-generate count-score count-generate count-cot (default: all)
# Every command appends rows to OUT/rows.jsonl as they are computed: rerunning the
# script resumes where it stopped. Run on 2 shared CPU cores with one torch thread.
#
#   bash docs/tasks_runs.sh tables
# reads what the runs wrote (no model is loaded), prints the tables of docs/tasks.md
# (markdown) and writes the figures docs/img/tasks-*.png; a run that was not made, or has
# no row yet, shows as "not run".
set -euo pipefail
if [ "${1:-}" = tables ]; then
  exec env OMP_NUM_THREADS=1 nice -n 10 python - <<'PY'
# Tables (markdown, on stdout) and figures (docs/img/tasks-*.png) from the rows under
# $TL_TASKS_OUT/<model>/<run>/rows.jsonl (default out/tasks) written by the runs above.
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd

from tl_glasses.tasks.evaluate import TaskResult

ROOT = Path(os.environ.get("TL_TASKS_OUT", "out/tasks"))
IMG = Path(os.environ.get("TL_TASKS_IMG", "docs/img"))
MODELS = ["smollm2-135m", "gemma-3-270m"]
COPY_RUNS = ["copy_last-score", "copy_first-score", "copy_last-hint-score", "copy_first-hint-score",
             "copy_last-alt-score", "copy_first-alt-score", "copy_last-type1-score", "copy_last-type2-score"]
COPY_GEN = ["copy_last-gen", "copy_first-gen", "copy_last-hint-gen", "copy_first-hint-gen",
            "copy_last-alt-gen", "copy_first-alt-gen"]
COUNT = ["count_sum", "count_ones", "count_ones_zeros", "count_word"]
MODES = ["answer", "cot", "cot_fewshot"]


def load(model, run):
    d = ROOT / model / run
    try:
        # --n-items 3 in the commands; a few directories also hold a 4th item of an earlier call
        return TaskResult.from_dir(d, n_items=3)
    except Exception:  # noqa: BLE001 - not run (or no row yet): reported as such
        return None


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
    out = ["| " + " | ".join([head] + [str(c) for c in cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    out += ["| " + " | ".join([name] + cells) + " |" for name, cells in rows]
    return "\n".join(out)


def copy_tables(model):
    rows, res = [], []
    ns = None
    for run in COPY_RUNS:
        r = load(model, run)
        if r is None:
            rows.append((run, ["not run"]))
            continue
        res.append(r)
        df = r.df.set_index("n")
        ns = ns or list(df.index)
        cells = []
        for n in ns:
            if n not in df.index:
                cells.append("not run")
                continue
            x = df.loc[n]
            cells.append(("**✓** " if x["correct"] else "") + f"{x['logit_diff']:+.2f}"
                         + ("" if x["prediction"] in (0, 1) else f" ({num(x['prediction'])})"))
        rows.append((f"`{r.conditions[0]}`", cells))
    print(f"\n**{model}, teacher-forced** (one item per cell; the cell is log P(0) − max log P(other "
          f"digit); ✓: 0 wins; otherwise the winning digit is 1 unless shown in brackets)\n")
    print(table(rows, ns, "condition \\ n"))
    if res:
        fig = TaskResult.concat(res).plot()
        fig.suptitle(f"{model}: copying, teacher-forced", fontsize=10)
        fig.savefig(IMG / f"tasks-copy-score-{model}.png", dpi=100, bbox_inches="tight")
    rows, ns = [], None
    for run in COPY_GEN:
        r = load(model, run)
        if r is None:
            rows.append((run, ["not run"]))
            continue
        df = r.df.set_index("n")
        ns = ns or list(df.index)
        rows.append((f"`{r.conditions[0]}`", [
            ("**✓** " if df.loc[n, "correct"] else "") + num(df.loc[n, "prediction"]) for n in ns]))
    print(f"\n**{model}, generation** (greedy, ≤ 24 new tokens, one item per cell; the cell is the parsed "
          f"answer, – where nothing could be read; the right answer is 0)\n")
    print(table(rows, ns, "condition \\ n"))


def count_tables(model):
    rows, res, ns = [], [], None
    for task in COUNT:
        for mode in MODES:
            r = load(model, f"{task}-{mode}-score")
            if r is None:
                rows.append((f"`{task}` {mode}", ["not run"]))
                continue
            res.append(r)
            s = r.summary_by_n().set_index("n")
            ns = ns or list(s.index)
            k = sorted(set(s["items"]))
            top = r.answer_histogram().head(1)
            common = f"{top['prediction'].iloc[0]} ({top['fraction'].iloc[0]:.0%})"
            rows.append((f"`{task}` {mode}", [num(s.loc[n, "mae"]) if n in s.index else "–" for n in ns]
                         + [f"{s['accuracy'].mean():.2f}", common, "/".join(map(str, k))]))
    print(f"\n**{model}, teacher-forced**: mean absolute error per n\n")
    print(table(rows, (ns or []) + ["accuracy", "most common answer", "items/cell"], "task, mode \\ n"))
    if res:
        fig = TaskResult.concat(res).plot()
        fig.suptitle(f"{model}: counting, teacher-forced (lines: mean absolute error per mode)", fontsize=10)
        fig.savefig(IMG / f"tasks-count-score-{model}.png", dpi=100, bbox_inches="tight")
    return res


def count_gen_tables(model):
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
    print(f"\n**{model}, generation** (greedy; ≤ 24 new tokens for `answer`, ≤ 128 for the CoT modes): "
          f"the parsed answers per n, ✓ where right, – where nothing could be read (right answers: n for "
          f"the sum and the run of ones, about 0.7 n and 0.5 n for the random tasks)\n")
    print(table(rows, ns + ["unparsed", "parse status"], "task, mode \\ n"))
    if res:
        fig = TaskResult.concat(res).plot()
        fig.suptitle(f"{model}: counting, generation (parsed answers only)", fontsize=10)
        fig.savefig(IMG / f"tasks-count-gen-{model}.png", dpi=100, bbox_inches="tight")
    return res


def histograms(model, score, gen):
    print(f"\n**{model}**: most common answers over all counting items (share of answers read)\n")
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
    print(table(lines, ["answers", "top 5", "answer 100"], "which items"))


score, gen = {}, {}
print("<!-- copying -->")
for model in MODELS:
    copy_tables(model)
print("<!-- counting, teacher-forced -->")
for model in MODELS:
    score[model] = count_tables(model)
print("<!-- counting, generation -->")
for model in MODELS:
    gen[model] = count_gen_tables(model)
print("<!-- answers -->")
for model in MODELS:
    histograms(model, score[model], gen[model])
PY
fi
M=${1:?model name}
shift || true
PARTS=${*:-copy-score copy-generate count-score count-generate count-cot}
OUT=${TL_TASKS_OUT:-out/tasks}/$M
TG="nice -n 10 tl-glasses tasks --model $M --threads 1 --no-progress"

COPY_L=2,5,10,20,50,100,150,200,300
COPY_GEN_L=5,20,50,100,200
COUNT_L=2,5,10,20,30,50,75,100
COUNT_GEN_L=5,10,20,50,100
COT_L=5,10,20,50,100

for part in $PARTS; do
  case $part in
    copy-score)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY_L --out $OUT/$task-score
        $TG --task $task --lengths $COPY_L --hint --out $OUT/$task-hint-score
        $TG --task $task --lengths $COPY_L --alternating --out $OUT/$task-alt-score
      done
      # App. C.5's prompt types (the paper ablates them on copy-last)
      $TG --task copy_last --lengths $COPY_L --prompt-type 1 --out $OUT/copy_last-type1-score
      $TG --task copy_last --lengths $COPY_L --prompt-type 2 --out $OUT/copy_last-type2-score
      ;;
    copy-generate)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY_GEN_L --scoring generate --max-new-tokens 24 --out $OUT/$task-gen
        $TG --task $task --lengths $COPY_GEN_L --scoring generate --max-new-tokens 24 --hint --out $OUT/$task-hint-gen
        $TG --task $task --lengths $COPY_GEN_L --scoring generate --max-new-tokens 24 --alternating --out $OUT/$task-alt-gen
      done
      ;;
    count-score)
      for mode in answer cot cot_fewshot; do
        for task in count_sum count_ones count_ones_zeros count_word; do
          $TG --task $task --lengths $COUNT_L --mode $mode --n-items 3 --out $OUT/$task-$mode-score
        done
      done
      ;;
    count-generate)
      for task in count_sum count_ones count_ones_zeros count_word; do
        $TG --task $task --lengths $COUNT_GEN_L --scoring generate --max-new-tokens 24 --n-items 3 \
          --out $OUT/$task-answer-gen
      done
      ;;
    count-cot)
      for mode in cot cot_fewshot; do
        for task in count_sum count_ones count_ones_zeros count_word; do
          $TG --task $task --lengths $COT_L --mode $mode --scoring generate --max-new-tokens 128 \
            --n-items 1 --out $OUT/$task-$mode-gen
        done
      done
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
