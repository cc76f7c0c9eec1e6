"""``tl-glasses patch``: where the difference between a pair (v, v*) is carried.

    tl-glasses patch --model gemma-3-270m --family ones --n 16,64,256 --method attribution \\
        --positions all --out runs/patch-ones
    tl-glasses patch --model gemma-3-270m --family ones --n 64 --mitigation separators:3 --out DIR
    tl-glasses patch --model gemma-3-270m --a "..." --b "..." --metric logit_diff --out DIR
    tl-glasses patch ... --method check      # attribution vs exact on the same cells

Writes, per length, ``DIR/n<N>/`` (the saved result), ``DIR/n<N>.png`` and
``DIR/n<N>.csv``, plus ``DIR/by_layer.csv`` (restored fraction per n, site and layer
at a's last position; z: the best head). With ``--a/--b``: ``DIR/patch.csv``,
``DIR/patch.png``, ``DIR/result/``.
"""
from __future__ import annotations

from pathlib import Path

from . import add_model_argument


def add_parser(sub) -> None:
    p = sub.add_parser("patch", help="activation / attribution patching of a pair (v, v*)",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_model_argument(p)
    p.add_argument("--dtype", default="fp32", help="fp32 (default), bf16, fp16, fp64")
    src = p.add_argument_group("the pair")
    src.add_argument("--family", help="sequence family (ones, digits_end_one, copy_last, or a template with {seq})")
    src.add_argument("--n", default="16", help="item counts, comma-separated (default 16)")
    src.add_argument("--level", default="item", choices=["item", "token"],
                     help="repeat the last item inside the prompt, or the last token of the input")
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--a", help="prompt a (instead of --family)")
    src.add_argument("--b", help="prompt b (instead of --family)")
    p.add_argument("--sites", default="resid_pre,attn_out,mlp_out,z",
                   help="comma-separated: resid_pre, resid_mid, resid_post, attn_out, mlp_out, z")
    p.add_argument("--positions", default="last",
                   help="last, all, or positions of a; a list starting with a minus needs the = form: --positions=-1,-31")
    p.add_argument("--layers", default=None, help="layers, e.g. 0-5,9 (default all)")
    p.add_argument("--metric", default="final_distance",
                   choices=["final_distance", "final_projection", "logit_diff"])
    p.add_argument("--method", default="exact", choices=["exact", "attribution", "check"],
                   help="check = attribution vs exact on the same cells (correlation)")
    p.add_argument("--mitigation", default=None, help="on both sides, e.g. separators:3, sliding_window:64@0-5")
    p.add_argument("--mitigation-a", default=None, help="on a's runs only")
    p.add_argument("--mitigation-b", default=None, help="on b's run only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-runs", type=int, default=4096, help="refuse exact patching above this many forwards (0: no limit)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def _load(name: str, dtype):
    from ..models import load_model

    return load_model(name, dtype=dtype)  # also "tiny:ARCH" / "tiny-ARCH"


def _int_list(text: str, what: str) -> list[int]:
    """"0-4,7,-1" -> [0, 1, 2, 3, 4, 7, -1] (:func:`tl_glasses._vocab.parse_layer_spec`)."""
    from .._vocab import parse_layer_spec
    from ..errors import GlassesError

    out = parse_layer_spec(text, what=what)
    if out is None and what != "layers":  # "all" is every layer; nothing else has an "all"
        raise GlassesError(f"cannot read {what} {text!r}; write them like 0-4,7")
    return out


def run(args) -> int:
    import pandas as pd

    from ..errors import GlassesError
    from ..interventions import parse_mitigation
    from ..models import resolve_dtype
    from ..results import atomic_write_text, figure_to_png
    from ..analysis.patching import attribution_check, patch_pair

    if bool(args.family) == bool(args.a or args.b):
        raise GlassesError("give either --family (and --n) or both --a and --b")
    if (args.a is None) != (args.b is None):
        raise GlassesError("--a and --b go together")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = _load(args.model, resolve_dtype(args.dtype))
    positions = args.positions if args.positions in ("last", "all") else _int_list(args.positions, "positions")
    kw = dict(
        sites=tuple(s.strip() for s in args.sites.split(",") if s.strip()),
        positions=positions,
        layers=None if args.layers is None else _int_list(args.layers, "layers"),
        metric=args.metric,
        mitigation=parse_mitigation(args.mitigation) if args.mitigation else None,
        mitigation_a=parse_mitigation(args.mitigation_a) if args.mitigation_a else None,
        mitigation_b=parse_mitigation(args.mitigation_b) if args.mitigation_b else None,
    )
    if args.method != "attribution":
        kw.update(batch_size=args.batch_size, max_runs=args.max_runs or None, progress=True)

    def one(a, b, stem: str):
        if args.method == "check":
            res = attribution_check(model, a, b, **kw)
        else:
            res = patch_pair(model, a, b, method=args.method, **kw)
        res.save(out / stem)
        res.df.to_csv(out / f"{stem}.csv", index=False)
        (out / f"{stem}.png").write_bytes(figure_to_png(res.plot()))
        print(f"[{stem}] {res.summary()}")
        return res

    rows = []
    if args.family:
        from ..tasks.families import get_family

        fam = get_family(args.family)
        for n in _int_list(args.n, "lengths"):
            pair = fam.pair(model, n, level=args.level, seed=args.seed)
            res = one(pair, None, f"n{n}")
            if args.method == "check":
                print(f"  Pearson {res.pearson:.3f}  Spearman {res.spearman:.3f}")
                rows.append(dict(n=n, pearson=res.pearson, spearman=res.spearman, cells=len(res.df)))
                continue
            tab = res.by_layer()
            with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
                print(f"  restored fraction at a's last position ({res.meta['tokens_a'][-1]!r}):")
                print(tab.to_string())
            long = tab.reset_index().melt(id_vars="layer", var_name="site", value_name="restored")
            long.insert(0, "n", n)
            long["tokens_a"] = res.meta["alignment"]["a_len"]
            long["final_rel_distance"] = res.meta["final_rel_distance"]
            rows.append(long)
        if rows:
            table = pd.DataFrame(rows) if args.method == "check" else pd.concat(rows, ignore_index=True)
            atomic_write_text(out / ("check.csv" if args.method == "check" else "by_layer.csv"),
                              table.to_csv(index=False))
    else:
        res = one(args.a, args.b, "result" if args.method != "check" else "check")
        res.df.to_csv(out / "patch.csv", index=False)
        (out / "patch.png").write_bytes(figure_to_png(res.plot()))
        if args.method != "check":
            with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
                print("  restored fraction by layer:")
                print(res.by_layer().to_string())
    print(f"wrote {out}")
    return 0
