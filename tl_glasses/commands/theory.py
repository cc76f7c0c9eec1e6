"""``tl-glasses theory``: the paper's theory (App. B) checked on the synthetic lab."""
from __future__ import annotations


def add_parser(sub) -> None:
    from ..synthetic._catalog import CATALOG  # light: TransformerLens is not imported here

    names = ", ".join(CATALOG)
    p = sub.add_parser(
        "theory",
        help="check the paper's lemmas and Figs. 8-10 numerically on the synthetic decoder",
        description="Run the numerical checks of App. B (Lemmas B.1, B.2, B.6, B.7, Thm B.3, Props. B.4, "
        "B.8, B.9, Cor. B.10) and regenerate Figs. 8-10. Each check writes OUT/<check>/ (data.parquet, "
        "meta.json: reload with tl_glasses.Result.load) and OUT/<check>.png. Long checks append their rows "
        f"to OUT/<check>/rows/ as they go: rerun the same command to resume. Checks: {names}.",
    )
    p.add_argument("checks", nargs="*", metavar="CHECK", help=f"which checks (default: all): {names}")
    p.add_argument("--out", default="theory-results", help="output directory (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small sizes: every check in seconds")
    p.add_argument("--list", action="store_true", help="list the checks and the claims they test, then exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import UnknownNameError
    from ..synthetic._catalog import CATALOG

    if args.list:
        for name, claim in CATALOG.items():
            print(f"{name:20s} {claim}")
        return 0
    names = args.checks or list(CATALOG)
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise UnknownNameError("theory check", unknown[0], list(CATALOG))
    from ..results import atomic_write_bytes, figure_to_png
    from ..synthetic.theory import CHECKS, run_check

    out = Path(args.out)
    for name in names:
        kw = {}
        if name in ("fig8", "fig10", "counting-precision"):
            kw["store_dir"] = out / name / ("rows-quick" if args.quick else "rows")
        res = run_check(name, quick=args.quick, **kw)
        res.save(out / name)
        atomic_write_bytes(out / f"{name}.png", figure_to_png(res.plot()))
        print(f"{name} ({CHECKS[name][0]}): {res.summary()}")
    print(f"results in {out}/")
    return 0
