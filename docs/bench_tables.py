"""The before/after tables of docs/benchmarks.md, from the comparisons committed under
findings/bench/compare-*.json (written by ``benchmarks/compare.py --out``).

    python docs/bench_tables.py            # print the generated blocks
    python docs/bench_tables.py --write    # rewrite them in docs/benchmarks.md
    python docs/bench_tables.py --check    # exit 1 when a table differs from the data

Needs no model. Block ``compare-NAME`` holds findings/bench/compare-NAME.json.
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


def table(cmp: dict) -> str:
    rows = []
    for r in cmp["rows"]:
        ch = r.get("change")
        rows.append([r["benchmark"], r.get("unit", ""), fmt(r.get("base")), fmt(r.get("head")),
                     "–" if ch is None else f"{100 * ch:+.1f}%", r["verdict"]])
    worse = sum(r["verdict"] == "worse" for r in cmp["rows"])
    head = (f"Base `{cmp['base']}` against head `{cmp.get('head', 'working tree')}`, "
            f"{cmp['rounds']} round(s){', --quick sizes' if cmp.get('quick') else ''}, "
            f"tolerance {100 * cmp['tolerance']:.0f}%: {worse} row(s) worse.\n\n")
    return head + doc_blocks.md_table(["benchmark", "unit", "base", "head", "change", "verdict"], rows)


def blocks(draw: bool = False) -> dict[str, str]:
    out = {}
    for p in sorted(ROOT.glob("compare-*.json")):
        out[p.stem] = table(json.loads(p.read_text()))
    return out


def main(argv: list[str]) -> int:
    return doc_blocks.run(argv, doc=DOC, prefix=PREFIX, blocks=lambda draw: blocks(draw=draw),
                          generator="docs/bench_tables.py", usage=__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
