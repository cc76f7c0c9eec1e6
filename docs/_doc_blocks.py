"""Generated blocks of a markdown page: the text between ``<!-- PREFIX:NAME -->`` and
``<!-- /PREFIX:NAME -->`` is written by a generator that reads only committed result
files. One command line for every such page (docs/findings_tables.py, docs/tasks_tables.py):

    python docs/X_tables.py            # print the generated blocks
    python docs/X_tables.py --write    # rewrite them in the page (and redraw its figures)
    python docs/X_tables.py --check    # exit 1 when a block of the page differs from the data
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable


def md_table(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table: a header row, the rule, one line per row (rows may be shorter)."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def marker(prefix: str) -> re.Pattern:
    return re.compile(rf"(<!-- {prefix}:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /{prefix}:(?P=name) -->)", re.S)


def run(argv: list[str], *, doc: Path, prefix: str, blocks: Callable[[bool], dict[str, str]],
        generator: str, usage: str) -> int:
    """``blocks(draw)`` returns {name: markdown}; with ``draw`` it also redraws figures."""
    mode = argv[0] if argv else "--print"
    if mode not in ("--print", "--write", "--check"):
        print(usage)
        return 2
    gen = blocks(mode == "--write")
    if mode == "--print":
        for k, v in gen.items():
            print(f"<!-- {prefix}:{k} -->\n{v}\n<!-- /{prefix}:{k} -->\n")
        return 0
    mark = marker(prefix)
    text = doc.read_text()
    found = {m.group("name"): m.group("body") for m in mark.finditer(text)}
    missing = sorted(set(gen) - set(found))
    page = f"docs/{doc.name}"
    if mode == "--check":
        bad = [k for k in gen if k in found and found[k].strip() != gen[k].strip()]
        for k in missing:
            print(f"{page} has no block {k!r}")
        for k in bad:
            print(f"{page} block {k!r} differs from the committed results: run python {generator} --write")
        return 1 if bad or missing else 0
    new = mark.sub(lambda m: m.group(1) + gen.get(m.group("name"), m.group("body")).strip("\n") + m.group(4), text)
    doc.write_text(new)
    for k in missing:
        print(f"note: {page} has no block {k!r}; add the two markers where it belongs")
    return 0
