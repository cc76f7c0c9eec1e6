"""``tl-glasses tasks``: the paper's copying and counting tasks on a model.

    tl-glasses tasks --list
    tl-glasses tasks --model smollm2-135m --task copy_last --lengths 2,10,50,100,200 --out runs/copy
    tl-glasses tasks --model gemma-3-270m --task count_sum --lengths 5:100:5 --mode cot \\
        --scoring generate --max-new-tokens 128 --out runs/sum_cot
    tl-glasses tasks --model tiny:llama --task copy_first --lengths 8,16 --hint

Rows are appended to OUT/rows.jsonl as they are computed: rerun the same command
after an interruption to resume. The finished result is saved to OUT/result/ and its
plot to OUT/plot.png.
"""
from __future__ import annotations

import json

from . import add_model_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tasks",
        help="copying/counting tasks with the paper's prompts (Figs. 2-4): accuracy, error, answers",
        description=__doc__,
    )
    p.add_argument("--list", action="store_true", help="list the tasks and their options, then exit")
    add_model_argument(p)
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    p.add_argument("--task", default="copy_last", help="task name (see --list)")
    p.add_argument("--lengths", default="2,5,10,20,50,100",
                   help="sequence lengths: '8,16,32', 'start:stop:step', or a mix")
    p.add_argument("--mode", default="answer", choices=["answer", "cot", "cot_fewshot"])
    p.add_argument("--scoring", default="score", choices=["score", "generate"],
                   help="score: teacher-forced log-probabilities of candidate answers; "
                        "generate: greedy decoding + parsing")
    p.add_argument("--n-items", type=int, default=None,
                   help="items per length of the random tasks (default 5; deterministic tasks have one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation bound (default 32 for 'answer', 192 for the CoT modes)")
    chat = p.add_mutually_exclusive_group()
    chat.add_argument("--chat", dest="chat", action="store_const", const=True, default="auto",
                      help="wrap the prompt in the tokenizer's chat template (default: when it has one)")
    chat.add_argument("--no-chat", dest="chat", action="store_const", const=False,
                      help="use the prompt as plain text")
    p.add_argument("--hint", action="store_true", help="copying: append the paper's hint (Fig. 2b)")
    p.add_argument("--alternating", action="store_true", help="copying: alternating 0/1 sequence (Fig. 2c)")
    p.add_argument("--period3", action="store_true",
                   help="copying: 110110... (the alternating control: periodic, the answer the minority digit)")
    p.add_argument("--odd-digit", metavar="D",
                   help="copying: the digit that differs from the 1s (0, 2..9, or 'random': one per item, "
                        "so --n-items gives that many distinct items)")
    p.add_argument("--prompt-type", type=int, default=None, choices=[0, 1, 2],
                   help="copying: 0 = App. C.1's prompt, 1/2 = App. C.5's types")
    p.add_argument("--sep", default=None, help="separator between items (e.g. ' ' or ',')")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other task option, value read as JSON when it parses (e.g. p=0.5)")
    p.add_argument("--out", default=None, help="results directory (resumable); none: print only")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _options(args) -> dict:
    from ..errors import GlassesError

    opts = {}
    if args.hint:
        opts["hint"] = True
    if args.alternating:
        opts["alternating"] = True
    if args.period3:
        opts["period3"] = True
    if args.odd_digit is not None:
        opts["odd_digit"] = args.odd_digit if args.odd_digit == "random" else _int_or_raise(args.odd_digit)
    if args.prompt_type is not None:
        opts["prompt_type"] = args.prompt_type
    if args.sep is not None:
        opts["sep"] = args.sep
    for kv in args.option:
        if "=" not in kv:
            raise GlassesError(f"--option takes KEY=VALUE; got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    return opts


def run(args) -> int:
    import pandas as pd

    from ..tasks.generators import list_tasks

    if args.list:
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            print(list_tasks().to_string(index=False))
        return 0
    import torch

    from ..models import load_model
    from ..tasks.evaluate import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    opts = _options(args)
    model = load_model(args.model, dtype=args.dtype)  # also "tiny:ARCH"
    res = evaluate(
        model, args.task, args.lengths, mode=args.mode, scoring=args.scoring, n_items=args.n_items,
        seed=args.seed, out=args.out, chat=args.chat, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, progress=not args.no_progress, **opts,
    )
    print(res)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(res.summary_by_n().to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if res.kind == "count":
            print("most common answers:")
            print(res.answer_histogram().head(5).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        from pathlib import Path

        res.save(Path(args.out) / "result")
        import matplotlib

        matplotlib.use("Agg")
        fig = res.plot()
        fig.savefig(Path(args.out) / "plot.png", dpi=110, bbox_inches="tight")
        print(f"saved {args.out}/result and {args.out}/plot.png")
    return 0


def _int_or_raise(text: str) -> int:
    from ..errors import GlassesError

    try:
        return int(text)
    except ValueError:
        raise GlassesError(f"--odd-digit is 0, 2..9 or 'random'; got {text!r}") from None
