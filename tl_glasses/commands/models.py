"""``tl-glasses models``: the embedded models and their cache state."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the embedded models (installed? cached? license)")
    p.add_argument("--load", metavar="NAME", help="load NAME once (builds the weight cache)")
    p.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    from ..models import list_models, load_model

    if args.load:
        model = load_model(args.load)
        print(f"loaded {args.load}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(list_models().drop(columns=["description"]).to_string(index=False))
    return 0
