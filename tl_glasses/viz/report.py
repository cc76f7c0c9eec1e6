"""``tl-glasses report``: the whole battery on one model, as one offline HTML page.

Each step runs an analyser, saves its raw result under ``DIR/raw/<step>/`` (Parquet,
JSON, safetensors) next to a ``step.json`` holding the step's configuration, and is
skipped on a rerun whose configuration matches — the long sweeps also resume row by
row. The page is then assembled *from the saved results*, so every number on it is
one that ``DIR/raw`` holds: figures embedded as PNG, tables with the exact command
that regenerates them, circuitsvis attention views with circuitsvis' local bundle
inlined (nothing loads from the network).

Layout: this module is the profiles and the page assembly; the steps (and what they
share: :class:`StepOutput`, :class:`Context`, the step cache) are in
:mod:`~tl_glasses.viz._steps`, re-exported here.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError
from ..results import atomic_write_text
from .html import Page
# re-exported: every name importable from here before the split still is
from ._steps import (  # noqa: F401
    STEPS,
    Context,
    StepOutput,
    _cached_step,
    _copy_prompt,
    _derived,
    _fig,
    _spearman,
    step_attention,
    step_checks,
    step_collapse,
    step_depth,
    step_global,
    step_oversquashing,
    step_patching,
    step_tasks,
    step_theory,
)

__all__ = ["report", "PROFILES"]

# ---------------------------------------------------------------------------------
# profiles: what each step runs. quick ≤ 10 min on 2 CPU cores with gemma-3-270m;
# full covers the paper's ranges; smoke is for tests.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        collapse_lengths=[4, 16], collapse_dtypes=["fp32", "bf16"], global_lengths=[],
        copy_n=8, probes=4, prompts_for_spearman=2, patch_n=[4], patch_lengths_attr=[4],
        task_lengths=[3, 6], task_items=2, tasks=["copy_last", "count_ones"], theory="quick",
        attention_prompt_n=6,
    ),
    "quick": dict(
        # native bf16 matmuls are ~5x slower than fp32 on CPUs without bf16 units: the bf16
        # arm stops at 400 tokens here (the full profile runs it to 2048)
        collapse_lengths=[16, 64, 256, 1024], collapse_dtypes=["fp32", "bf16"], collapse_max_tokens={"bf16": 400},
        global_lengths=[256, 1024],
        copy_n=40, probes=16, prompts_for_spearman=4, patch_n=[16, 64], patch_lengths_attr=[16, 64],
        task_lengths=[5, 10, 20, 40], task_items=6, tasks=["copy_last", "copy_first", "count_ones", "count_sum"],
        theory="quick", attention_prompt_n=8,
    ),
    "full": dict(
        collapse_lengths=[8, 16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048], collapse_dtypes=["fp32", "bf16", "fp16"],
        global_lengths=[256, 512, 768, 1024, 1536, 2048], copy_n=120, probes=32, prompts_for_spearman=20,
        patch_n=[16, 64, 256, 1024], patch_lengths_attr=[16, 64, 256, 1024],
        task_lengths=[5, 10, 20, 50, 100, 200], task_items=20,
        tasks=["copy_last", "copy_first", "count_sum", "count_ones", "count_ones_zeros", "count_word"],
        theory="full", attention_prompt_n=12,
    ),
}


def report(model="gemma-3-270m", out: str | os.PathLike = "report", *, profile: str = "quick",
           steps: list[str] | None = None, progress: bool = True) -> Path:
    """Run the battery on ``model`` (a name or a loaded model) and write ``out/index.html``.

    ``profile``: ``"quick"`` (≤ 10 min on 2 CPU cores with gemma-3-270m), ``"full"``
    (the paper's ranges) or ``"smoke"`` (seconds; for tests). Reruns reuse the saved
    results of every step whose configuration is unchanged."""
    from tqdm.auto import tqdm

    from ..models import load_model, model_info

    if profile not in PROFILES:
        raise UnknownNameError("report profile", profile, list(PROFILES))
    chosen = [s for s in STEPS if steps is None or s[0] in steps]
    if steps is not None:
        unknown = set(steps) - {s[0] for s in STEPS}
        if unknown:
            raise UnknownNameError("report step", sorted(unknown)[0], [s[0] for s in STEPS])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    name = model if isinstance(model, str) else model_info(model).get("name", type(model).__name__)
    if isinstance(model, str):
        if progress:
            print(f"[tl-glasses report] loading {model} …", flush=True)
        model = load_model(model)
    ctx = Context(model=model, model_name=str(name), out=out, profile=profile, p=PROFILES[profile], progress=progress)
    page = Page(
        title=f"tl_glasses report — {name}",
        lede=(f"Representational collapse and over-squashing (Barbero et al., NeurIPS 2024) measured on "
              f"<b>{name}</b> ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}), profile "
              f"<b>{profile}</b>. Raw results: <code>raw/</code> beside this page. Regenerate the whole page with "
              f"<code>tl-glasses report --model {name} --out DIR --profile {profile}</code>."),
    )
    timings = {}
    bar = tqdm(chosen, desc="report", disable=not progress)
    for key, title, fn in bar:
        bar.set_postfix_str(key)
        t = time.perf_counter()
        o = fn(ctx)
        timings[key] = round(time.perf_counter() - t, 1)
        if o is None:
            continue
        sec = page.section(key, title)
        for s in o.text:
            sec.text(s)
        for f in o.findings:
            sec.finding(f)
        for w in o.warnings:
            sec.warn(w)
        for png, alt in o.figures:
            sec.figure(png, alt)
        for df, caption, source in o.tables:
            sec.raw(f'<div class="table" data-source="{source}">')
            sec.table(df, caption=caption)
            sec.raw("</div>")
        for html_part in o.raw_html:
            sec.raw(html_part)
        for c in o.commands:
            sec.command(c)
    page.uses_circuitsvis = ctx.uses_cv
    total = round(time.perf_counter() - t0, 1)
    page.section("about", "About this run").text(
        f"Generated by tl_glasses in {total} s (step times: "
        + ", ".join(f"{k} {v} s" for k, v in timings.items()) + "). Cached steps are reused on reruns.")
    path = page.write(out / "index.html")
    atomic_write_text(out / "report.json", json.dumps({"model": name, "profile": profile, "seconds": total,
                                                        "steps": timings}, indent=1))
    if progress:
        print(f"[tl-glasses report] wrote {path} in {total} s", flush=True)
    return path
