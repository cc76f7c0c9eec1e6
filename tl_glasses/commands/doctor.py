"""``tl-glasses doctor``: versions, embedded models, and every self-check (exit 1 on a failure)."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="print the versions that matter and check that every fast path equals its exact definition",
        description="Prints python/torch/transformers/transformer-lens/gguf versions and the embedded "
        "models' state, then runs (seconds, tiny models) the self-checks: logits equal plain transformers, "
        "each scoring fast path equals the plain recompute, cached/batched generation equals one-by-one "
        "decoding, fused attention equals eager. Exit code 1 when any check fails.",
    )
    p.add_argument("--model", metavar="NAME", help="also run the checks on this model (e.g. gemma-3-270m)")
    p.add_argument("--no-tiny", action="store_true", help="skip the tiny-model checks (only with --model)")
    p.add_argument("--json", metavar="FILE", help="also write the checks and versions as JSON to FILE")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..doctor import doctor
    from ..errors import GlassesError

    if args.no_tiny and not args.model:
        raise GlassesError("--no-tiny leaves nothing to check; give --model NAME as well")
    ok, lines, env = doctor(args.model, tiny=not args.no_tiny)
    if args.json:
        from ..results import atomic_write_text

        atomic_write_text(args.json, json.dumps({"ok": ok, "environment": env,
                                                 "checks": [ln.as_dict() for ln in lines]}, indent=1, default=str))
    return 0 if ok else 1
