"""``tl-glasses`` command line. Each subcommand lives in ``tl_glasses/commands/<name>.py``
and defines ``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import GlassesError

# subcommand -> module (imported only to build the parser; heavy imports happen in func)
COMMANDS = ["doctor", "models", "collapse", "sensitivity", "paths", "tasks", "theory", "patch", "report"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tl-glasses",
        description="Measure representational collapse and over-squashing (Barbero et al., 2024) "
        "on TransformerLens models.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"tl_glasses.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tl_glasses.commands.{name}":
                continue
            raise
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    open_before = _open_figures()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GlassesError as exc:
        print(f"tl-glasses {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        # the figures this command made and saved: close them, and only them (main() may be
        # called from a notebook, whose own figures stay open)
        if "matplotlib.pyplot" in sys.modules:
            plt = sys.modules["matplotlib.pyplot"]
            for num in set(plt.get_fignums()) - open_before:
                plt.close(num)


def _open_figures() -> set:
    if "matplotlib.pyplot" not in sys.modules:
        return set()
    return set(sys.modules["matplotlib.pyplot"].get_fignums())


if __name__ == "__main__":
    sys.exit(main())
