"""``tl-glasses report``: the whole battery as one offline HTML page."""
from __future__ import annotations

from . import add_model_argument


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="run the battery on a model and write DIR/index.html")
    add_model_argument(p)
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"],
                   help="quick: <= 10 min on 2 CPU cores; full: the paper's ranges; smoke: seconds")
    p.add_argument("--steps", nargs="*", help="only these steps (default: all)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..viz.report import report

    report(args.model, args.out, profile=args.profile, steps=args.steps, progress=not args.no_progress)
    return 0
