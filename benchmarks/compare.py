"""Benchmarks of two revisions in one run on the same machine: is any ratio worse?

    python benchmarks/compare.py --base f5b12c6                  # all suites
    python benchmarks/compare.py --base main~3 --only collapse patching --quick
    python benchmarks/compare.py --base f5b12c6 --rounds 2 --out benchmarks/results/compare.json

With ``--out``, every finished round is kept in ``<out>.rounds.json`` and a rerun of the
same command resumes after the last finished round (more ``--rounds`` adds rounds).
Rounds alternate which revision runs first.

The base revision is checked out into a temporary git worktree; each round runs the
chosen suites of the base and then of the working tree, each revision's own
``benchmarks/run.py`` against its own package (``PYTHONPATH``) in its own Python process,
so both see the same machine, load and model caches. Every benchmark row is
a ratio against a bare forward of the same model in the same process, so the comparison
is ratio against ratio. With ``--rounds`` > 1 the median over rounds is compared.

A row is *worse* when it moved against its target's direction by more than
``--tolerance`` (default 5%): rows whose target reads ``>=``/``≥`` and speed-ups are
better when larger, every other ratio (unit starting with ``x``) is better when smaller;
rows in seconds, GiB or KiB and drift checks (target exactly ``~1``) are shown and not judged. The exit status is 1 when a row is worse.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _run_suites(tree: Path, only: list[str] | None, quick: bool) -> list[dict]:
    """Run the revision's own ``benchmarks/run.py`` against its own package (``tree``);
    return the rows it wrote during this call."""
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(tree / "benchmarks" / "run.py")]
    if only:
        cmd += ["--only", *only]
    if quick:
        cmd.append("--quick")
    start = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=str(tree))
    rows: list[dict] = []
    for p in sorted((tree / "benchmarks" / "results").glob("*.json")):
        if p.stat().st_mtime >= start:
            rows += json.loads(p.read_text())
    return rows


def _direction(row: dict) -> int | None:
    """+1: larger is better, -1: smaller is better, None: not a judged ratio."""
    unit = str(row.get("unit", ""))
    target = str(row.get("target", "")).strip()
    if not unit.startswith("x") or target == "~1":  # a drift check, not a cost
        return None
    if target.startswith((">=", "≥")) or "speed-up" in str(row.get("benchmark", "")):
        return +1
    return -1


def compare(base_rows: list[list[dict]], head_rows: list[list[dict]], tolerance: float) -> list[dict]:
    """One row per benchmark present in both: median value per side, change, verdict."""
    def medians(rounds: list[list[dict]]) -> dict[str, tuple[float, dict]]:
        vals: dict[str, list[float]] = {}
        first: dict[str, dict] = {}
        for rows in rounds:
            for r in rows:
                v = r.get("value")
                if isinstance(v, (int, float)):
                    key = f"{r.get('suite', '')}: {r['benchmark']}"
                    vals.setdefault(key, []).append(float(v))
                    first.setdefault(key, r)
        return {k: (statistics.median(v), first[k]) for k, v in vals.items()}

    b, h = medians(base_rows), medians(head_rows)
    out = []
    for key in sorted(set(b) & set(h)):
        (bv, row), (hv, _) = b[key], h[key]
        change = (hv - bv) / abs(bv) if bv else float("inf") if hv else 0.0
        d = _direction(row)
        if d is None:
            verdict = "not judged"
        else:
            verdict = "worse" if -d * change > tolerance else "same or better"
        out.append(dict(benchmark=key, unit=row.get("unit", ""), target=row.get("target", ""), base=bv, head=hv,
                        change=round(change, 4), verdict=verdict))
    for key in sorted(set(b) ^ set(h)):
        out.append(dict(benchmark=key, unit="", base=b.get(key, (None,))[0], head=h.get(key, (None,))[0],
                        change=None, verdict="only in " + ("base" if key in b else "head")))
    return out


def _describe_head() -> str:
    """The working tree's commit, with ``+changes`` when it has uncommitted edits."""
    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD")
    return rev + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare against (e.g. a commit before a refactor)")
    ap.add_argument("--only", nargs="*", help="suites to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--rounds", type=int, default=1, help="alternating base/head rounds (median compared)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="relative change that counts as worse")
    ap.add_argument("--out", type=Path, help="write the comparison (JSON) here")
    args = ap.parse_args(argv)
    # Each finished round is written beside --out as it ends, and a rerun with the same
    # base/suites/sizes picks up from there: an interrupted hour-long run loses one round at most.
    log = args.out.with_suffix(".rounds.json") if args.out else None
    key = dict(base=args.base, quick=args.quick, only=args.only)
    done = json.loads(log.read_text()) if log and log.exists() else {}
    if done.get("key") != key:
        done = dict(key=key, base=[], head=[])
    base_rows: list[list[dict]] = done["base"]
    head_rows: list[list[dict]] = done["head"]
    if len(base_rows) != len(head_rows):
        base_rows[:] = head_rows[:] = base_rows[:min(len(base_rows), len(head_rows))]
    if len(base_rows) < args.rounds:
        with tempfile.TemporaryDirectory(prefix="tl-glasses-bench-") as tmp:
            wt = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), args.base],
                           check=True, capture_output=True)
            try:
                for i in range(len(base_rows), args.rounds):
                    # Alternate which side runs first, so a slow drift of the machine
                    # over the run does not always land on the same side.
                    sides = [("base " + args.base, wt, base_rows), ("working tree", ROOT, head_rows)]
                    got = {}
                    for name, tree, _ in (sides if i % 2 == 0 else sides[::-1]):
                        print(f"== round {i + 1}: {name} ==", flush=True)
                        got[name] = _run_suites(tree, args.only, args.quick)
                    for name, _, rows in sides:
                        rows.append(got[name])
                    if log:
                        log.parent.mkdir(parents=True, exist_ok=True)
                        log.write_text(json.dumps(done))
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)],
                               check=False, capture_output=True)
    table = compare(base_rows, head_rows, args.tolerance)
    import pandas as pd

    with pd.option_context("display.width", 220, "display.max_colwidth", 90):
        print(pd.DataFrame(table).to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(base=args.base, head=_describe_head(), rounds=args.rounds,
                                            quick=args.quick, only=args.only, tolerance=args.tolerance,
                                            rows=table), indent=1))
    return 1 if any(r["verdict"] == "worse" for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
