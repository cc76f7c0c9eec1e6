"""Tables and figures of docs/findings.md from the committed results in findings/.

    python docs/findings_tables.py            # print the generated blocks
    python docs/findings_tables.py --write    # rewrite them in docs/findings.md, redraw docs/img/findings-*.png
    python docs/findings_tables.py --check    # exit 1 when a number in docs/findings.md differs from the data

Needs no model: it reads ``findings/<model>/<run>/rows.jsonl`` (written, resumably, by
``bash docs/runs.sh``). A block of docs/findings.md sits between
``<!-- findings:NAME -->`` and ``<!-- /findings:NAME -->``; everything between the two
markers is generated.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from tl_glasses.tasks.evaluate import TaskResult  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _doc_blocks as doc_blocks  # noqa: E402
import findings_items as items  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "findings"
DOC = REPO / "docs" / "findings.md"
IMG = REPO / "docs" / "img"
QWEN = "qwen2.5-coder-1.5b"
COUNT_TASKS = ["count_sum", "count_ones", "count_ones_zeros", "count_word"]
COPY_RUNS = ["copy_last-score", "copy_first-score", "copy_last-hint-score", "copy_first-hint-score",
             "copy_last-alt-score", "copy_first-alt-score", "copy_last-period3-score", "copy_first-period3-score",
             "copy_last-type1-score", "copy_last-type2-score", "copy_last-odd-score", "copy_first-odd-score"]


def load(model: str, run: str) -> TaskResult | None:
    return items.task_result(DATA, model, run)


def num(v) -> str:
    if pd.isna(v):
        return "–"
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:.3g}"


table = doc_blocks.md_table


def acc_cell(s) -> str:
    k = round(s["accuracy"] * s["items"])
    return f"{k}/{int(s['items'])} ({s['accuracy']:.2f} [{s['accuracy_lo']:.2f}, {s['accuracy_hi']:.2f}])"


BIG_BOUND = 2048  # the new-token bound of a CoT cell rerun because 512 cut its listing (`<task>-<mode>-gen2048`)


def count_block(model: str, scoring: str, mode: str = "answer") -> tuple[str, list[TaskResult]]:
    res, rows = [], []
    runs = [(f"{task}-{mode}-{scoring}", f"`{task}`", True) for task in COUNT_TASKS]
    if scoring == "gen" and mode != "answer":  # a cell rerun with a larger token bound, beside the first
        runs += [(f"{task}-{mode}-{scoring}{BIG_BOUND}", f"`{task}` ({BIG_BOUND:,}-token bound)", False)
                 for task in COUNT_TASKS]
    for run, label, required in runs:
        r = load(model, run)
        if r is None:
            if required:
                rows.append([label, "not run yet", "", "", "", ""])
            continue
        res.append(r)
        s = r.summary_by_n()
        for _, x in s.iterrows():
            g = r.df[r.df["n"] == x["n"]]
            top = g["prediction"].value_counts()
            common = ", ".join(f"{num(p)}×{c}" if c > 1 else num(p) for p, c in top.head(3).items()) or "–"
            if scoring == "gen":  # a generation cut by the token bound has no final answer line
                cut = (g["stop_reason"] == "max_new_tokens").mean() if "stop_reason" in g else float("nan")
                extra = [f"{x['unparsed']:.0%}", "–" if pd.isna(cut) else f"{cut:.0%}"]
            else:
                extra = [f"{x['logit_diff']:+.2f}"]
            rows.append([label, str(int(x["n"])), acc_cell(x), num(x["mae"]), common, *extra])
    last = ["unparsed", "cut by the token bound"] if scoring == "gen" else ["mean margin (nats)"]
    head = ["task", "n", "right (accuracy [95% Wilson])", "mean abs. error", "answers given", *last]
    return table(head, rows), res


def count_summary(model: str) -> str:
    """One line per task: how far the model counts right, and what it answers beyond."""
    rows = []
    for task in COUNT_TASKS:
        r = load(model, f"{task}-answer-score")
        if r is None:
            continue
        s = r.summary_by_n().sort_values("n")
        ok = s[s["accuracy"] >= 1.0]["n"]
        first_bad = s[s["accuracy"] < 1.0]["n"]
        all_right = int(s["n"].iloc[0]) - 1
        for _, x in s.iterrows():
            if x["accuracy"] < 1.0:
                break
            all_right = int(x["n"])
        big = r.df[(r.df["n"] >= 20) & r.df["prediction"].notna()]
        h = big["prediction"].value_counts(normalize=True)
        top = ", ".join(f"{num(p)} ({f:.0%})" for p, f in h.head(3).items()) or "–"
        rows.append([f"`{task}`", f"{int(s['n'].min())}–{int(s['n'].max())}", str(int(s["items"].max())),
                     str(all_right) if all_right >= int(s["n"].iloc[0]) else "none",
                     str(int(first_bad.iloc[0])) if len(first_bad) else "–",
                     f"{len(ok)} of {len(s)}", top])
    if not rows:
        return "not run yet"
    return table(["task", "n measured", "items per n", "every item right up to n", "first n with an error",
                  "lengths all right", "most common answers at n ≥ 20"], rows)


def copy_summary(model: str) -> str:
    rows = []
    for run in COPY_RUNS:
        r = load(model, run)
        if r is None:
            continue
        for cond, s in r.summary_by_n().groupby("condition", sort=False):
            s = s.sort_values("n")
            bad = s[s["accuracy"] < 1.0]["n"]
            low = s.loc[s["logit_diff"].idxmin()]
            rows.append([f"`{cond}`", f"{int(s['n'].min())}–{int(s['n'].max())}",
                         str(int(bad.iloc[0])) if len(bad) else "none",
                         f"{low['logit_diff']:+.2f} at n = {int(low['n'])}",
                         f"{s['logit_diff'].iloc[-1]:+.2f}"])
    if not rows:
        return "not run yet"
    return table(["condition", "n measured", "first n with an error", "smallest mean margin (nats)",
                  "margin at the longest n"], rows)


COPY_GEN_RUNS = ["copy_last-odd-gen", "copy_first-odd-gen"]


def copy_block(model: str, scoring: str = "score") -> tuple[str, list[TaskResult]]:
    """Teacher-forced copying (every condition; the mean margin) or the answers the model
    writes itself (``scoring="gen"``: the ten-item variant; the unparsed fraction)."""
    res, rows = [], []
    for run in COPY_RUNS if scoring == "score" else COPY_GEN_RUNS:
        r = load(model, run)
        if r is None:
            continue
        res.append(r)
        for _, x in r.summary_by_n().iterrows():
            g = r.df[r.df["n"] == x["n"]]
            wrong = g.loc[~g["correct"].astype(bool) & g["prediction"].notna(), "prediction"].value_counts()
            given = (", ".join(num(p) for p in wrong.index[:3]) if scoring == "score" else
                     ", ".join(f"{num(p)}×{c}" if c > 1 else num(p) for p, c in wrong.head(3).items()))
            extra = f"{x['logit_diff']:+.2f}" if scoring == "score" else f"{x['unparsed']:.0%}"
            rows.append([f"`{x['condition']}`", str(int(x["n"])), acc_cell(x), extra, given or "–"])
    if not rows:
        return "not run yet", res
    head = ["condition", "n", "right (accuracy [95% Wilson])",
            "mean margin (nats)" if scoring == "score" else "unparsed", "wrong answers given"]
    return table(head, rows), res


def figure(res: list[TaskResult], title: str, path: Path, kind: str = "auto") -> None:
    if not res:
        return
    import matplotlib.pyplot as plt
    from cycler import cycler

    # ten distinct hues while they suffice; beyond ten conditions tab20 (pairs of one hue),
    # and one legend below the panels so that no legend covers a line
    n_cond = sum(r.df["condition"].nunique() for r in res)
    colours = plt.get_cmap("tab10" if n_cond <= 10 else "tab20").colors
    with plt.rc_context({"axes.prop_cycle": cycler(color=colours)}):
        fig = TaskResult.concat(res).plot(kind=kind)
    handles, labels = [], []
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            h, lab = ax.get_legend_handles_labels()
            for hh, ll in zip(h, lab):
                if ll not in labels:
                    handles.append(hh)
                    labels.append(ll)
            leg.remove()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8,
                   frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")

    plt.close(fig)


def _log_lengths(fig, lengths: list[int]) -> None:
    """The same x scale in every panel of every collapse figure: log n, ticks at the lengths."""
    lo, hi = min(lengths) / 1.4, max(lengths) * 1.4
    for ax in fig.axes:
        if not ax.has_data():
            ax.set_visible(False)
            continue
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xticks(lengths)
        ax.set_xticklabels([str(n) for n in lengths], rotation=45, fontsize=8)
        ax.minorticks_off()


def collapse_figures() -> None:
    """Fig. 5 style, one figure per model and family that has a committed sweep."""
    import matplotlib.pyplot as plt

    for model in items.MODELS:
        for run, what in COLLAPSE_RUNS:
            r = items.collapse_result(DATA, model, run)
            path = IMG / f"findings-{model}-{run}.png"
            if r is None:
                continue
            fig = r.plot(metric="l2")
            _log_lengths(fig, sorted(r.df["n"].unique()))
            fig.suptitle(f"{model}: {what}; distance of the last token's final representation", fontsize=10)
            fig.tight_layout()
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)


def bench_block(model: str) -> str:
    """The benchmark ratios (``benchmarks/run.py --only qwen``, copied by ``docs/runs.sh bench``)."""
    import json

    p = DATA / model / "bench" / "qwen.json"
    if not p.exists():
        return "not run yet"
    rows = []
    for r in json.loads(p.read_text()):
        secs = {k: v for k, v in r.items() if k.startswith("seconds") or k.endswith("_mb")}
        rows.append([r["benchmark"], f"{r['value']:.3g} {r['unit']}", r.get("target", "") or "–",
                     ", ".join(f"{k.replace('seconds_', '').replace('seconds', 'total')} {v:g}"
                               + ("" if k.endswith("_mb") else " s") for k, v in secs.items())])
    return table(["benchmark", "ratio", "target", "measured"], rows)


COLLAPSE_RUNS = (("collapse-ones", "1ⁿ vs 1ⁿ⁺¹ (Fig. 5a)"), ("collapse-digits_end_one", "digits ending in 1 (Fig. 5b)"),
                 ("collapse-commas", "copying prompt, with and without a comma every 3 digits (Fig. 5c/d)"))


def figure_list() -> str:
    """Markdown images of the collapse figures whose results are committed."""
    out = []
    for model in items.MODELS:
        for run, what in COLLAPSE_RUNS:
            if items.collapse_result(DATA, model, run) is not None:
                out.append(f"![{model}: {what}](img/findings-{model}-{run}.png)")
    return "\n\n".join(out) or "not run yet"


def blocks(draw: bool) -> dict[str, str]:
    out = {}
    out["paper-items"] = items.paper_table(DATA)
    out["qwen-bench"] = bench_block(QWEN)
    out["collapse-figures"] = figure_list()
    out["qwen-count-summary"] = count_summary(QWEN)
    out["qwen-count-score"], cs = count_block(QWEN, "score")
    out["qwen-count-gen"], cg = count_block(QWEN, "gen")
    for mode in ("cot", "cot_fewshot"):
        out[f"qwen-count-{mode}"], _ = count_block(QWEN, "gen", mode)
    out["qwen-copy-summary"] = copy_summary(QWEN)
    out["qwen-copy-score"], cp = copy_block(QWEN)
    out["qwen-copy-gen"], cpg = copy_block(QWEN, "gen")
    if draw:
        figure(cs, f"{QWEN}: counting, answer mode, teacher-forced", IMG / "findings-qwen-count-score.png")
        figure(cg, f"{QWEN}: counting, answer mode, greedy generation", IMG / "findings-qwen-count-gen.png")
        figure(cp, f"{QWEN}: copying, teacher-forced", IMG / "findings-qwen-copy-score.png")
        figure(cpg, f"{QWEN}: copying, ten items per n, greedy generation", IMG / "findings-qwen-copy-gen.png")
        collapse_figures()
    return out


def main(argv: list[str]) -> int:
    return doc_blocks.run(argv, doc=DOC, prefix="findings", blocks=lambda draw: blocks(draw=draw),
                          generator="docs/findings_tables.py", usage=__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
