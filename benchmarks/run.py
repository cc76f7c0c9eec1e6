"""Run the benchmarks and print one table of ratios (analyser / bare forward, same run).

    python benchmarks/run.py                 # all suites, default sizes
    python benchmarks/run.py --only load collapse
    python benchmarks/run.py --quick         # small sizes (a smoke run)

Each ``benchmarks/bench_<suite>.py`` defines ``run(quick: bool) -> list[dict]``.
Results are also written to ``benchmarks/results/<suite>.json``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def suites() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="suites to run (default: all): " + ", ".join(suites()))
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args(argv)
    import pandas as pd

    chosen = suites()
    if args.only:
        unknown = set(args.only) - set(chosen)
        if unknown:
            ap.error(f"unknown suites {sorted(unknown)}; known: {sorted(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.only}
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    all_rows = []
    for name, path in chosen.items():
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t = time.perf_counter()
        print(f"== {name} ==", flush=True)
        rows = mod.run(quick=args.quick)
        for r in rows:
            r.setdefault("suite", name)
            print("   ", {k: v for k, v in r.items() if k != "suite"}, flush=True)
        (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str))
        print(f"   ({time.perf_counter() - t:.0f} s)", flush=True)
        all_rows += rows
    if all_rows:
        df = pd.DataFrame(all_rows)
        cols = [c for c in ["suite", "benchmark", "value", "unit", "target"] if c in df]
        with pd.option_context("display.width", 200, "display.max_colwidth", 70):
            print(df[cols].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
