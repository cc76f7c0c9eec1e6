"""``tl-glasses collapse``: sweep a family's (v, v*) pairs over lengths, dtypes and
mitigations; write the table and the figure. Rerun the same command to resume.

    tl-glasses collapse --model gemma-3-270m --family ones --lengths 8:1024:32 \\
        --dtype bf16 --mitigation separators:3 --out DIR
"""
from __future__ import annotations

import argparse

from . import add_model_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "collapse",
        help="representational collapse: distance of y(v) and y(v*) vs length (paper Sec. 4, Fig. 5)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(p)
    p.add_argument("--family", default="ones",
                   help="ones | digits_end_one | copy_last, or a template with a {seq} slot")
    p.add_argument("--lengths", default="8:1024:32", help="start:stop:step or a comma list (items in v)")
    p.add_argument("--dtype", action="append", default=None,
                   help="dtype of a real run (fp32, bf16, fp16, fp64); repeat for several (default fp32)")
    p.add_argument("--round-to", action="append", default=[],
                   help="also the estimate 'fp32 representations rounded to this dtype'; repeatable")
    p.add_argument("--max-tokens", action="append", default=[], metavar="DTYPE=N",
                   help="skip real runs of DTYPE longer than N tokens (e.g. fp16=256 on a CPU)")
    p.add_argument("--mitigation", action="append", default=[],
                   help="separators[:K[:SEP]] | sliding_window:W[@LAYERS] | global_attention[@LAYERS] | "
                        "prompt_structure:question_first|question_last|sequence_first; repeatable, each "
                        "measured beside the baseline; join with + to combine")
    p.add_argument("--level", choices=["item", "token"], default="item",
                   help="repeat the last item inside the prompt, or the last token of the input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attn-impl", choices=["auto", "eager", "sdpa"], default="auto")
    p.add_argument("--shift-floor", default="4",
                   help="measure the position-shift noise floor every K-th length (1 = all), 'ends' or 'none'")
    p.add_argument("--batch-floor", default="ends", help="'ends', 'all', 'none' or a step")
    p.add_argument("--floor-factor", type=float, default=2.0)
    p.add_argument("--prefix-cache", action="store_true",
                   help="run the prefix v and v* share once with a key/value cache (about 2x faster at long "
                        "lengths; verified against two full forwards once per model, else the full forwards)")
    p.add_argument("--heads", choices=["last", "all", "none"], default="last")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="table format (besides the saved result)")
    p.add_argument("--metric", choices=["head", "l2", "linf", "rel"], default="head", help="figure metric")
    p.add_argument("--out", required=True, help="results directory (rows appended as produced; rerun resumes)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _load(name: str, dtype):
    from ..models import load_model

    return load_model(name, dtype=dtype)  # also "tiny:ARCH" / "tiny-ARCH"


def _step(text: str):
    text = str(text).strip().lower()
    if text in ("ends", "all", "none"):
        return text
    return int(text)


def run(args) -> int:
    from pathlib import Path

    import torch

    from ..analysis.collapse import collapse_sweep, parse_lengths
    from ..errors import GlassesError
    from ..models import resolve_dtype

    dtypes = [resolve_dtype(d) for d in (args.dtype or ["fp32"])]
    caps = {}
    for item in args.max_tokens:
        if "=" not in item:
            raise GlassesError(f"--max-tokens takes DTYPE=N, e.g. fp16=256; got {item!r}")
        k, v = item.split("=", 1)
        caps[resolve_dtype(k)] = int(v)
    lengths = parse_lengths(args.lengths)
    # the model is loaded in fp32 when fp32 is run or rounded from; else in the first dtype
    base_dtype = torch.float32 if (torch.float32 in dtypes or args.round_to) else dtypes[0]
    model = _load(args.model, base_dtype)
    res = collapse_sweep(
        model, args.family, lengths, dtypes=dtypes, mitigations=args.mitigation, level=args.level,
        seed=args.seed, round_to=args.round_to, max_tokens=caps, out=args.out,
        progress=not args.no_progress, attn_impl=args.attn_impl, heads=False if args.heads == "none" else args.heads,
        floor_factor=args.floor_factor, shift_floor=_step(args.shift_floor), batch_floor=_step(args.batch_floor),
        prefix_cache=args.prefix_cache,
    )
    out = Path(args.out)
    table = res.df.drop(columns=[c for c in res.df.columns if res.df[c].map(type).eq(list).any()])
    if args.format == "csv":
        table.to_csv(out / "collapse.csv", index=False)
    else:
        res.df.to_parquet(out / "collapse.parquet", index=False)
    res.collapse_table().to_csv(out / "collapse_lengths.csv", index=False)
    fig = res.plot(metric=args.metric)
    fig.savefig(out / "collapse.png", dpi=120, bbox_inches="tight")
    print(res.summary())
    print(f"wrote {out / ('collapse.' + args.format)}, {out / 'collapse_lengths.csv'}, {out / 'collapse.png'}")
    return 0
