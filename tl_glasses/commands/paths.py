"""``tl-glasses paths``: the path-product bound (Thm 5.1/B.5), attention rollout and the
depth limit (Prop. 5.2/B.8). Writes tables, figures and saved results to --out.

    tl-glasses paths --model gemma-3-270m --copy 24 --out DIR                 # bound + depth profile
    tl-glasses paths --model gemma-3-270m --copy 24 --compare jacobian --out DIR   # + Spearman vs sensitivity
    tl-glasses paths --model smollm2-135m --study copy --lengths 4:44:4 --out DIR  # the copy study (resumes)
"""
from __future__ import annotations

import argparse

from .sensitivity import add_model_args, load, prompt_tokens


def _beta(text: str):
    """``--beta``: "auto" or a number (path_bound checks its range)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--beta takes a number or 'auto', not {text!r}") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "paths",
        help="path-product bound, rollout and depth profile of causal attention (paper Sec. 5)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("--variant", choices=["bound", "rollout", "attention"], default="bound")
    p.add_argument("--heads", choices=["mean", "max", "none"], default="mean")
    p.add_argument("--beta", default="1.0", type=_beta,
                   help="a number, or 'auto' (per layer: median ‖resid‖/‖attn_out‖)")
    p.add_argument("--compare", choices=["jacobian", "hutchinson", "scalar"], default=None,
                   help="also compute gradient sensitivity and the Spearman correlation with the bound")
    p.add_argument("--study", choices=["copy"], default=None,
                   help="copy: bound vs sensitivity over copy_last/copy_first prompts at --lengths")
    p.add_argument("--lengths", default="4:44:4", help="study lengths (items): start:stop:step or a comma list")
    p.add_argument("--method", choices=["jacobian", "hutchinson", "scalar"], default="jacobian",
                   help="sensitivity method of the study")
    p.add_argument("--probes", type=int, default=64, help="Hutchinson probes of the study")
    p.add_argument("--tasks", default="copy_last,copy_first", help="study tasks (comma list)")
    p.add_argument("--out", required=True, help="output directory (a study appends rows and resumes)")
    p.set_defaults(func=run)


def _lengths(text: str) -> list[int]:
    from .._vocab import parse_lengths

    return parse_lengths(text)  # the one length grammar (start:stop:step includes stop when hit)


def run(args) -> int:
    from pathlib import Path

    from ..analysis.paths import depth_profile, path_bound

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load(args.model, args.dtype)
    if args.study == "copy":
        from ..analysis.oversquashing import copy_study

        res = copy_study(model, _lengths(args.lengths), method=args.method, heads=args.heads,
                         probes=args.probes, tasks=[t for t in args.tasks.split(",") if t],
                         out=out / "rows", progress=True)
        res.df.to_csv(out / "copy_study.csv", index=False)
        res.save(out / "result")
        res.plot().savefig(out / "copy_study.png", dpi=120, bbox_inches="tight")
        cols = [c for c in ["model", "task", "n_items", "n_tokens", "spearman", "spearman_auto",
                            "spearman_attention", "spearman_seq", "spearman_seq_auto",
                            "sens_start/middle", "sens_end/middle", "first_token_mass_final"] if c in res.df]
        print(res.df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(res.summary())
        print(f"wrote {out}")
        return 0
    tokens, seq, label = prompt_tokens(model, args)
    beta = args.beta
    res = path_bound(model, tokens, variant=args.variant, heads=args.heads, beta=beta)
    res.meta["prompt"] = label
    res.df.to_csv(out / "path_bound.csv", index=False)
    res.save(out / "path_bound")
    res.plot().savefig(out / "path_bound.png", dpi=120, bbox_inches="tight")
    print(res.summary())
    depth = depth_profile(model, tokens, heads=args.heads, beta=beta)
    depth.df.to_csv(out / "depth_profile.csv", index=False)
    depth.save(out / "depth_profile")
    depth.plot().savefig(out / "depth_profile.png", dpi=120, bbox_inches="tight")
    print(depth.summary())
    print(depth.df[["layer", "first_token_mass", "dist_inf", "lambda2", "band"]].to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))
    if args.compare:
        from ..analysis.oversquashing import bound_vs_sensitivity

        cmp = bound_vs_sensitivity(model, tokens, method=args.compare, variant=args.variant,
                                   heads=args.heads, beta=beta, positions=seq)
        cmp.df.to_csv(out / "bound_vs_sensitivity.csv", index=False)
        cmp.save(out / "bound_vs_sensitivity")
        cmp.plot().savefig(out / "bound_vs_sensitivity.png", dpi=120, bbox_inches="tight")
        print(cmp.summary())
    print(f"wrote {out}")
    return 0
