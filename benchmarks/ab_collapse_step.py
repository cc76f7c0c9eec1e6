"""One collapse sweep step against the eager transformers forward of the same pair, timed
interleaved in one process: the in-process check behind a row that moved in a comparison of
two revisions (``compare.py`` runs each revision in its own process, minutes apart, so its
rows carry the load of those minutes).

    python benchmarks/ab_collapse_step.py [MODEL] [TOKENS] [ROUNDS]
    git worktree add /tmp/base REV && PYTHONPATH=/tmp/base python benchmarks/ab_collapse_step.py

The second form measures the package of revision REV with this script. Prints the median
and the range over rounds of step / eager pair. Defaults: gemma-3-270m, 1024 tokens, 8 rounds.
"""
from __future__ import annotations

import statistics
import sys

from _timing import bare_forward
from bench_capture import _interleaved
from bench_collapse import _pair


def main(argv: list[str]) -> int:
    import tl_glasses as tg
    from tl_glasses.analysis._probe import LastTokenProbe
    from tl_glasses.analysis.collapse import _run_pair
    from tl_glasses.models import load_hf

    name = argv[0] if argv else "gemma-3-270m"
    n = int(argv[1]) if len(argv) > 1 else 1024
    rounds = int(argv[2]) if len(argv) > 2 else 8
    model = tg.load_model(name)
    hf, _ = load_hf(name, attn_implementation="eager")
    ta, tb = _pair(model, n)
    probe = LastTokenProbe(model)
    t = _interleaved({"step": lambda: _run_pair(model, ta, tb, probe),
                      "eager": lambda: (bare_forward(hf, ta), bare_forward(hf, tb))}, rounds)
    r = [a / b for a, b in zip(t["step"], t["eager"])]
    print(f"{tg.__file__}: {name} at {n} tokens, step / eager pair: median {statistics.median(r):.4f} "
          f"range {min(r):.4f}-{max(r):.4f} over {rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
