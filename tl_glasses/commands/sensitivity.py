"""``tl-glasses sensitivity``: how much the last token's final representation depends
on every input position (paper Sec. 5, Thm 5.1). Writes the table, the figure and
the saved result to --out.

    tl-glasses sensitivity --model smollm2-135m --copy 24 --method jacobian --out DIR
    tl-glasses sensitivity --model gemma-3-270m --prompt "..." --method hutchinson --probes 32 --out DIR
    tl-glasses sensitivity --model gemma-3-270m --copy 24 --wrt all --method scalar --out DIR
    tl-glasses sensitivity --model smollm2-135m --study hints --copy 24 --out DIR   # Fig. 2b,c
"""
from __future__ import annotations

import argparse

from . import add_model_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sensitivity",
        help="gradient sensitivity of the last token to every position (paper Sec. 5)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("--method", choices=["jacobian", "hutchinson", "scalar"], default="jacobian")
    p.add_argument("--probes", type=int, default=64, help="Hutchinson probes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default=None,
                   help="scalar method: a single-token string or id (its logit), or A,B (logit difference); "
                        "default: the top-1 logit")
    p.add_argument("--wrt", default="blocks.0.hook_resid_pre",
                   help="hook name, layer index, comma list, or 'all' (every layer's resid_pre)")
    p.add_argument("--target", default="final", help="'final' (ln_final.hook_out), a layer index or a hook name")
    p.add_argument("--study", choices=["hints"], default=None,
                   help="hints: baseline vs hint vs alternating digits on the copy prompt of --copy items")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def add_model_args(p) -> None:
    add_model_argument(p)
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16 | fp64")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", help="the prompt text")
    g.add_argument("--copy", type=int, metavar="N", help="the paper's copying prompt with N digits")
    p.add_argument("--task", default="copy_last", choices=["copy_last", "copy_first"],
                   help="with --copy: copy the last digit of 1…10 or the first of 01…1")
    p.add_argument("--hint", action="store_true", help="with --copy: append the paper's hint (Fig. 2b)")
    p.add_argument("--alternating", action="store_true", help="with --copy: alternating digits (Fig. 2c)")


def load(name: str, dtype):
    from ..models import load_model

    return load_model(name, dtype=dtype)  # also "tiny:ARCH"


def prompt_tokens(model, args):
    """(tokens, sequence item positions or None, label)."""
    from ..errors import GlassesError

    if args.copy is not None:
        from ..analysis.oversquashing import copy_items

        (task, n, ti), = copy_items(model, [args.copy], tasks=[args.task], hint=args.hint,
                                    alternating=args.alternating)
        label = f"{task} n={n}" + (" +hint" if args.hint else "") + (" alternating" if args.alternating else "")
        return ti.tokens, ti.item_positions, label
    if args.prompt:
        from .._core import as_tokens

        return as_tokens(model, args.prompt), None, "prompt"
    raise GlassesError("give --prompt TEXT or --copy N")


def _wrt(text: str):
    if text == "all":
        return "all"
    parts = [x.strip() for x in text.split(",") if x.strip()]
    vals = [int(x) if x.lstrip("-").isdigit() else x for x in parts]
    return vals[0] if len(vals) == 1 else vals


def _metric(text):
    if text is None:
        return None
    parts = text.split(",")
    conv = [int(x) if x.strip().isdigit() else x for x in parts]
    return tuple(conv) if len(conv) == 2 else conv[0]


def run(args) -> int:
    from pathlib import Path

    from ..analysis.sensitivity import sensitivity

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load(args.model, args.dtype)
    if args.study == "hints":
        from ..analysis.oversquashing import hint_study

        res = hint_study(model, args.copy or 24, task=args.task, method=args.method, out=out / "rows")
        res.df.to_csv(out / "hint_study.csv", index=False)
        res.save(out / "result")
        res.plot().savefig(out / "hint_study.png", dpi=120, bbox_inches="tight")
        print(res.df.to_string(index=False))
        print(f"wrote {out}")
        return 0
    tokens, seq, label = prompt_tokens(model, args)
    target = int(args.target) if args.target.lstrip("-").isdigit() else args.target
    res = sensitivity(model, tokens, wrt=_wrt(args.wrt), target=target, method=args.method,
                      probes=args.probes, seed=args.seed, metric=_metric(args.metric))
    res.meta["prompt"] = label
    res.df.to_csv(out / "sensitivity.csv", index=False)
    res.save(out / "result")
    fig = res.plot()
    fig.savefig(out / "sensitivity.png", dpi=120, bbox_inches="tight")
    print(res.summary())
    us = res.u_shape(seq) if seq is not None and len(seq) >= 3 else res.u_shape()
    where = "sequence items" if seq is not None else "all positions"
    print(f"U-shape over {where}:")
    print(us.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    us.to_csv(out / "u_shape.csv", index=False)
    print(f"wrote {out}")
    return 0
