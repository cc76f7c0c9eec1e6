"""The before/after tables of docs/benchmarks.md, from the comparisons committed under
findings/bench/compare-*.json (written by ``benchmarks/compare.py --out``).

    python docs/bench_tables.py            # print the generated blocks
    python docs/bench_tables.py --write    # rewrite them in docs/benchmarks.md
    python docs/bench_tables.py --check    # exit 1 when a table differs from the data

Needs no model. Block ``compare-NAME`` holds findings/bench/compare-NAME.json; block
``suite-NAME`` holds findings/bench/NAME.json, one suite's rows as ``benchmarks/run.py`` wrote
them to ``benchmarks/results/NAME.json`` (copied there to be committed).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _doc_blocks as doc_blocks  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "findings" / "bench"
DOC = REPO / "docs" / "benchmarks.md"
IMG = REPO / "docs" / "img"  # no figures; kept for the shared test's interface
PREFIX = "bench"


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _spread(rounds: list[list[dict]] | None) -> dict[str, str]:
    """benchmark → "lo–hi" of its value over the rounds (from ``<out>.rounds.json``)."""
    vals: dict[str, list[float]] = {}
    for rows in rounds or []:
        for r in rows:
            if isinstance(r.get("value"), (int, float)):
                vals.setdefault(f"{r.get('suite', '')}: {r['benchmark']}", []).append(float(r["value"]))
    return {k: f"{fmt(min(v))}–{fmt(max(v))}" for k, v in vals.items() if len(v) > 1}


def table(cmp: dict, rounds: dict | None = None) -> str:
    b, h = _spread((rounds or {}).get("base")), _spread((rounds or {}).get("head"))
    spread = bool(b or h)
    rows = []
    for r in cmp["rows"]:
        ch = r.get("change")
        cells = [r["benchmark"], r.get("unit", ""), fmt(r.get("base")), fmt(r.get("head")),
                 "–" if ch is None else f"{100 * ch:+.1f}%", r["verdict"]]
        if spread:
            cells[4:4] = [b.get(r["benchmark"], "–"), h.get(r["benchmark"], "–")]
        rows.append(cells)
    worse = sum(r["verdict"] == "worse" for r in cmp["rows"])
    head = (f"Base `{cmp['base']}` against head `{cmp.get('head', 'working tree')}`, "
            f"{cmp['rounds']} round(s){', --quick sizes' if cmp.get('quick') else ''}, "
            f"tolerance {100 * cmp['tolerance']:.0f}%: {worse} row(s) worse"
            f"{' (base and head: the median over rounds; the ranges: lowest–highest round)' if spread else ''}.\n\n")
    cols = ["benchmark", "unit", "base", "head", "change", "verdict"]
    if spread:
        cols[4:4] = ["base range", "head range"]
    return head + doc_blocks.md_table(cols, rows)


def suite_table(rows: list[dict]) -> str:
    """One suite's results file as it ran: a row per benchmark, with its target."""
    cells = [[r["benchmark"], r.get("unit", ""), fmt(r.get("value")), r.get("target", "")] for r in rows]
    return doc_blocks.md_table(["benchmark", "unit", "value", "target"], cells)


def blocks(draw: bool = False) -> dict[str, str]:
    out = {}
    for p in sorted(ROOT.glob("*.json")):
        if not p.name.startswith("compare-"):
            out[f"suite-{p.stem}"] = suite_table(json.loads(p.read_text()))
    for p in sorted(ROOT.glob("compare-*.json")):
        if p.name.endswith(".rounds.json"):
            continue  # the per-round log of compare.py, read beside its comparison
        log = p.with_suffix(".rounds.json")
        cmp = json.loads(p.read_text())
        rounds = json.loads(log.read_text()) if log.exists() else None
        if rounds and rounds.get("key") != dict(base=cmp["base"], quick=cmp.get("quick"), only=cmp.get("only")):
            rounds = None  # the log of another run (other sizes or suites), not of this comparison
        out[p.stem] = table(cmp, rounds)
    return out


def main(argv: list[str]) -> int:
    return doc_blocks.run(argv, doc=DOC, prefix=PREFIX, blocks=lambda draw: blocks(draw=draw),
                          generator="docs/bench_tables.py", usage=__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
