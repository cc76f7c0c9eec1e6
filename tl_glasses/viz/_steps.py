"""The steps of ``tl-glasses report`` (:func:`tl_glasses.viz.report.report`).

Each step runs one analyser (or reuses the result a previous run saved under
``DIR/raw/<step>/`` with the same configuration) and returns a :class:`StepOutput`:
text, findings, figures and tables built from the saved results only. :data:`STEPS`
lists them in page order.

Re-exported by :mod:`tl_glasses.viz.report`, where they always were.
"""
from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from ..results import Result, atomic_write_text, figure_to_png
from .html import attention_view


@dataclass
class StepOutput:
    """What a step contributes to the page; built from saved results only."""

    text: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    figures: list[tuple[bytes, str]] = field(default_factory=list)
    tables: list[tuple[pd.DataFrame, str, str]] = field(default_factory=list)  # df, caption, source
    commands: list[str] = field(default_factory=list)
    raw_html: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Context:
    model: Any
    model_name: str
    out: Path
    profile: str
    p: dict[str, Any]
    progress: bool
    uses_cv: bool = False

    def raw(self, key: str) -> Path:
        return self.out / "raw" / key

    def cmd(self, *args: Any) -> str:
        return "tl-glasses " + " ".join(shlex.quote(str(a)) for a in args)


def _fig(result_or_fig, **kw) -> bytes:
    fig = result_or_fig.plot(**kw) if hasattr(result_or_fig, "plot") and not hasattr(result_or_fig, "savefig") else result_or_fig
    fig = getattr(fig, "figure", fig)
    return figure_to_png(fig)


def _cached_step(ctx: Context, key: str, config: dict, run: Callable[[Path], None]) -> bool:
    """Run ``run(dir)`` unless ``dir/step.json`` already records this configuration
    as complete. Returns True when it ran."""
    d = ctx.raw(key)
    stamp = d / "step.json"
    cfg = json.loads(json.dumps({"model": ctx.model_name, **config}, default=str))
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()).get("config") == cfg:
                return False
        except json.JSONDecodeError:
            pass
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    run(d)
    atomic_write_text(stamp, json.dumps({"config": cfg, "seconds": round(time.perf_counter() - t, 2)}, indent=1))
    return True


def _derived(ctx: Context, key: str, name: str, df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Save a table derived from a step's raw result beside it, so that every table on the
    page points (``data-source``) at the file holding exactly its numbers."""
    rel = f"raw/{key}/{name}.parquet"
    path = ctx.out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    df.reset_index(drop=True).to_parquet(tmp)
    os.replace(tmp, path)
    return df, rel


def _copy_prompt(n: int, hint: bool = False) -> str:
    from ..tasks import prompts

    seq = "1" * (n - 1) + "0"
    text = prompts.COPY.format(seq=seq)
    return text + (" " + prompts.HINT if hint else "")


# ---------------------------------------------------------------------------------
# steps
def step_checks(ctx: Context) -> StepOutput:
    """The self-checks of ``tl-glasses doctor`` on the report's own model, run every time
    (they check this installation, not a saved result). A failed logits check stops the
    report; a fast path that failed is excluded for the rest of the run (the analysers
    then use one that agrees with its definition, or stop with a FastPathError)."""
    from .. import _fastpath
    from ..doctor import model_checks
    from ..errors import GlassesError
    from ..models import EMBEDDED, load_hf

    hf = None
    if ctx.model_name.lower() in EMBEDDED:
        from .._core import model_dtype

        hf = load_hf(ctx.model_name, dtype=model_dtype(ctx.model))[0]
    lines = model_checks(ctx.model, label=ctx.model_name, hf=hf)
    del hf
    d = ctx.raw("checks")
    d.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([ln.as_dict() for ln in lines])
    Result(df=df, meta={"what": "self-checks", "versions": _fastpath.versions()}).save(d / "checks")
    o = StepOutput()
    o.text.append("Before any number is computed, every fast path this run may use is compared with its exact "
                  "definition on this model (the checks of <code>tl-glasses doctor</code>); a path that fails is "
                  "not used.")
    o.tables.append((Result.load(d / "checks").df, "Self-checks on this model", "raw/checks/checks/data.parquet"))
    bad = [ln for ln in lines if not ln.ok]
    for ln in bad:
        if ln.check.startswith("logits"):
            raise GlassesError(f"report refused: {ln.render()}. This installation does not reproduce plain "
                               f"transformers on {ctx.model_name}; run `tl-glasses doctor` and reinstall with "
                               f"bash scripts/setup.sh")
        kind, path = ln.check.split(" ")[0], ln.check.split(" ")[1]
        if kind == "fused":
            kind, path = "attention", "sdpa"
        _fastpath.exclude(ctx.model, kind, path)
        o.warnings.append(f"{ln.render()}: this path is not used in this report")
    o.commands.append(f"tl-glasses doctor --model {ctx.model_name}")
    return o


def step_collapse(ctx: Context) -> StepOutput:
    from ..analysis.collapse import CollapseResult, collapse_sweep
    from ..interventions import separators

    p = ctx.p
    caps = p.get("collapse_max_tokens")
    cfg = dict(family="ones", lengths=p["collapse_lengths"], dtypes=p["collapse_dtypes"], mitigations=["separators:3"],
               max_tokens=caps)

    def run(d: Path):
        res = collapse_sweep(ctx.model, "ones", p["collapse_lengths"], dtypes=p["collapse_dtypes"],
                             mitigations=[separators(every=3)], max_tokens=caps, out=d / "rows",
                             progress=ctx.progress)
        res.save(d / "result")

    _cached_step(ctx, "collapse", cfg, run)
    res = CollapseResult.load(ctx.raw("collapse") / "result")
    o = StepOutput()
    o.text.append(
        "The pair (v, v*) is the paper's counting prompt around a run of n ones, v* with one more "
        "one. Distance between the last token's final representations (mean over last-layer heads "
        "of <code>hook_z</code>, with the min–max band), per dtype, with and without a comma every "
        "third item (Fig. 5). Rows within the measured noise floor are marked, never reported as distances.")
    o.figures.append((_fig(res), "collapse curves"))
    table, table_src = _derived(ctx, "collapse", "collapse_table", res.collapse_table())
    o.tables.append((table, "Collapse length per arm (None: no collapse in range)", table_src))
    o.tables.append((res.df[[c for c in ["n", "tokens", "dtype", "mode", "mitigation", "l2", "rel", "head_mean",
                                         "bitwise_equal", "same_argmax", "below_floor"] if c in res.df]],
                     "Measured rows", "raw/collapse/result/data.parquet"))
    for _, r in table.iterrows():
        cl = r["collapse_bitwise"]
        o.findings.append(
            f"{r['dtype']} / {r['mitigation']}: "
            + (f"bitwise collapse from n = {int(cl)}" if cl is not None and not pd.isna(cl)
               else f"no bitwise collapse for n ≤ {r['n_max']}")
            + ("" if pd.isna(r["min_rel"]) else f"; smallest relative distance above the floor {r['min_rel']:.3g}"))
    o.commands.append(ctx.cmd("collapse", "--model", ctx.model_name, "--family", "ones", "--lengths",
                              ",".join(map(str, p["collapse_lengths"])), "--dtype", ",".join(p["collapse_dtypes"]),
                              "--mitigation", "separators:3",
                              *[a for k, v in (caps or {}).items() for a in ("--max-tokens", f"{k}={v}")],
                              "--out", "DIR"))
    return o


def step_global(ctx: Context) -> StepOutput | None:
    from ..analysis.collapse import CollapseResult, collapse_sweep
    from ..interventions import global_attention, native_local_layers

    lengths = ctx.p["global_lengths"]
    try:
        local, _ = native_local_layers(ctx.model)
    except Exception:  # noqa: BLE001 - not a transformers-backed model: nothing to compare
        local = []
    if not lengths or not local:
        return None
    cfg = dict(family="ones", lengths=lengths, mitigations=["global"])

    def run(d: Path):
        res = collapse_sweep(ctx.model, "ones", lengths, mitigations=[global_attention()], out=d / "rows",
                             progress=ctx.progress)
        res.save(d / "result")

    _cached_step(ctx, "global", cfg, run)
    res = CollapseResult.load(ctx.raw("global") / "result")
    o = StepOutput()
    o.text.append(
        f"This model has native sliding-window (local) attention on layers {local}. The paper "
        "(App. C.6) argues that local windows counter collapse; here the same sweep runs with the "
        "native local layers and with every layer made global.")
    o.figures.append((_fig(res, metric="l2"), "native local vs all global"))
    table, table_src = _derived(ctx, "global", "collapse_table", res.collapse_table())
    o.tables.append((table, "Native local vs all-global layers", table_src))
    o.commands.append(ctx.cmd("collapse", "--model", ctx.model_name, "--family", "ones", "--lengths",
                              ",".join(map(str, lengths)), "--mitigation", "global", "--out", "DIR"))
    return o


def step_oversquashing(ctx: Context) -> StepOutput:
    from ..analysis.paths import PathResult, path_bound
    from ..analysis.sensitivity import SensitivityResult, sensitivity

    p = ctx.p
    n = p["copy_n"]
    prompts = {"copy": _copy_prompt(n), "copy+hint": _copy_prompt(n, hint=True)}
    cfg = dict(n=n, probes=p["probes"], prompts=list(prompts))

    def run(d: Path):
        for key, text in prompts.items():
            sensitivity(ctx.model, text, method="hutchinson", probes=p["probes"], seed=0).save(d / f"sens-{key}")
            path_bound(ctx.model, text, variant="bound").save(d / f"bound-{key}")

    _cached_step(ctx, "oversquashing", cfg, run)
    o = StepOutput()
    rows = []
    for key in prompts:
        s = SensitivityResult.load(ctx.raw("oversquashing") / f"sens-{key}")
        b = PathResult.load(ctx.raw("oversquashing") / f"bound-{key}")
        sv, bv = s.values.flatten().double(), b.values.flatten().double()
        rho = _spearman(sv, bv)
        u = s.u_shape()
        row = {"prompt": key, "tokens": int(sv.numel()), "spearman(bound, sensitivity)": rho}
        if isinstance(u, pd.DataFrame) and len(u):
            row.update({f"sens {k}": v for k, v in u.iloc[0].to_dict().items() if isinstance(v, (int, float))})
        rows.append(row)
        if key == "copy":
            o.figures.append((_fig(s), "gradient sensitivity by position"))
            o.figures.append((_fig(b), "path bound by position"))
    table = pd.DataFrame(rows)
    tdir = ctx.raw("oversquashing") / "summary"
    Result(df=table, meta={"what": "over-squashing summary"}).save(tdir)
    o.text.append(
        f"The copying prompt with n = {n} digits (\"1…10\"), with and without the hint. Hutchinson "
        f"estimates (k = {p['probes']} Gaussian probes) of ‖∂y_n/∂h_i‖²_F at the first block's input, "
        "and the last row of the path-product bound (A + I per layer, heads averaged).")
    o.tables.append((Result.load(tdir).df, "Sensitivity vs bound", "raw/oversquashing/summary/data.parquet"))
    o.commands.append(ctx.cmd("sensitivity", "--model", ctx.model_name, "--method", "hutchinson", "--probes",
                              p["probes"], "--prompt", prompts["copy"], "--out", "DIR"))
    o.commands.append(ctx.cmd("paths", "--model", ctx.model_name, "--prompt", prompts["copy"], "--out", "DIR"))
    return o


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = pd.Series(a.numpy()).rank().to_numpy()
    rb = pd.Series(b.numpy()).rank().to_numpy()
    return float(pd.Series(ra).corr(pd.Series(rb)))


def step_depth(ctx: Context) -> StepOutput:
    from ..analysis.paths import DepthResult, depth_profile

    text = _copy_prompt(ctx.p["copy_n"])
    _cached_step(ctx, "depth", dict(n=ctx.p["copy_n"]),
                 lambda d: depth_profile(ctx.model, text).save(d / "result"))
    res = DepthResult.load(ctx.raw("depth") / "result")
    o = StepOutput()
    o.text.append("First-token mass of the partial attention-rollout products after each layer "
                  "(Prop. 5.2/B.8: the product tends to the matrix whose first column is all ones).")
    o.figures.append((_fig(res), "first-token mass vs depth"))
    o.tables.append((res.df, "Per layer", "raw/depth/result/data.parquet"))
    o.commands.append(ctx.cmd("paths", "--model", ctx.model_name, "--depth", "--prompt", text, "--out", "DIR"))
    return o


def step_patching(ctx: Context) -> StepOutput:
    from ..analysis.patching import PatchResult, patch_pair
    from ..tasks.families import get_family

    fam = get_family("ones")
    ns = ctx.p["patch_n"]

    def run(d: Path):
        for n in ns:
            pair = fam.pair(ctx.model, n)
            patch_pair(ctx.model, pair.a, pair.b, method="attribution", positions="all",
                       sites=("resid_pre",)).save(d / f"attr-{n}")
            patch_pair(ctx.model, pair.a, pair.b, method="exact", positions="last").save(d / f"exact-{n}")

    _cached_step(ctx, "patching", dict(family="ones", n=ns), run)
    o = StepOutput()
    o.text.append(
        "Patching the run of v with the activations of v* (the `ones` pair): the fraction of the "
        "final-representation difference each patch restores. Left: attribution patching of the "
        "residual stream at every layer × position; right: exact patches of the last position, per site and layer.")
    for n in ns:
        a = PatchResult.load(ctx.raw("patching") / f"attr-{n}")
        e = PatchResult.load(ctx.raw("patching") / f"exact-{n}")
        o.figures.append((_fig(a, kind="heatmap"), f"attribution heatmap n={n}"))
        o.figures.append((_fig(e, kind="layers"), f"exact last-position patches n={n}"))
        o.tables.append((e.df, f"Exact patches of the last position, n = {n}", f"raw/patching/exact-{n}/data.parquet"))
    o.commands.append(ctx.cmd("patch", "--model", ctx.model_name, "--family", "ones", "--n",
                              ",".join(map(str, ns)), "--method", "exact", "--out", "DIR"))
    return o


def step_tasks(ctx: Context) -> StepOutput:
    from ..tasks.evaluate import TaskResult, evaluate

    p = ctx.p

    def run(d: Path):
        for task in p["tasks"]:
            evaluate(ctx.model, task, p["task_lengths"], scoring="score", n_items=p["task_items"],
                     out=d / f"rows-{task}", progress=ctx.progress).save(d / task)

    _cached_step(ctx, "tasks", dict(tasks=p["tasks"], lengths=p["task_lengths"], items=p["task_items"]), run)
    o = StepOutput()
    o.text.append("The paper's copying and counting prompts (App. C.1), answer-only mode, scored by "
                  "teacher forcing: the candidate answers' log-probabilities after the answer prefix.")
    summaries = []
    for task in p["tasks"]:
        r = TaskResult.load(ctx.raw("tasks") / task)
        s = r.summary_by_n()
        s.insert(0, "task", task)
        summaries.append(s)
        o.figures.append((_fig(r), f"task {task}"))
    table = pd.concat(summaries, ignore_index=True)
    Result(df=table, meta={"what": "task summary"}).save(ctx.raw("tasks") / "summary")
    o.tables.append((Result.load(ctx.raw("tasks") / "summary").df, "Accuracy by task and n",
                     "raw/tasks/summary/data.parquet"))
    o.commands.append(ctx.cmd("tasks", "--model", ctx.model_name, "--task", ",".join(p["tasks"]), "--lengths",
                              ",".join(map(str, p["task_lengths"])), "--mode", "answer", "--scoring", "score",
                              "--out", "DIR"))
    return o


def step_theory(ctx: Context) -> StepOutput:
    from ..results import Result as R
    from ..synthetic.theory import CHECKS, run_check

    quick = ctx.p["theory"] == "quick"

    def run(d: Path):
        for name in CHECKS:
            run_check(name, quick=quick).save(d / name)

    _cached_step(ctx, "theory", dict(quick=quick), run)
    o = StepOutput()
    o.text.append("The paper's lemmas checked numerically on the synthetic lab model "
                  "(tl_glasses.synthetic.SyntheticDecoder).")
    for name in CHECKS:
        r = R.load(ctx.raw("theory") / name)
        o.figures.append((_fig(r), name))
        o.findings.append(f"<b>{name}</b>: {r.summary()}")
    o.commands.append(ctx.cmd("theory", "--out", "DIR") + (" --quick" if quick else ""))
    return o


def step_attention(ctx: Context) -> StepOutput:
    from .._core import as_tokens, n_layers
    from ..capture import run as capture_run

    text = _copy_prompt(ctx.p["attention_prompt_n"])
    toks = as_tokens(ctx.model, text)
    L = n_layers(ctx.model)
    layers = sorted({0, L // 2, L - 1})
    names = [f"blocks.{l}.attn.hook_pattern" for l in layers]
    path = ctx.raw("attention") / "patterns.safetensors"

    def run(d: Path):
        from safetensors.torch import save_file

        keep = lambda t: t[0].detach().float().cpu().contiguous()  # noqa: E731
        got = capture_run(ctx.model, toks, read={n: keep for n in names}, attn_impl="eager",
                          purpose="the attention step").acts
        save_file({n.replace(".", "_"): got[n] for n in names}, str(path))

    _cached_step(ctx, "attention", dict(text=text, layers=layers), run)
    from safetensors.torch import load_file

    pats = load_file(str(path))
    strs = ctx.model.to_str_tokens(toks[0]) if hasattr(ctx.model, "to_str_tokens") else [str(int(t)) for t in toks[0]]
    o = StepOutput()
    o.text.append(f"Attention patterns of every head for a short copying prompt ({toks.shape[-1]} tokens), "
                  f"layers {layers} (circuitsvis; hover a head to focus it).")
    for l, n in zip(layers, names):
        a = pats[n.replace(".", "_")]
        o.raw_html.append(f"<h3>Layer {l}</h3>" + attention_view(list(map(str, strs)), a.numpy(),
                                                                  head_names=[f"L{l}H{h}" for h in range(a.shape[0])]))
    ctx.uses_cv = True
    return o


STEPS: list[tuple[str, str, Callable[[Context], StepOutput | None]]] = [
    ("checks", "Self-checks: every fast path against its definition", step_checks),
    ("collapse", "Representational collapse (Sec. 4, Fig. 5)", step_collapse),
    ("global", "Native local vs all-global attention (App. C.6)", step_global),
    ("oversquashing", "Over-squashing: sensitivity and the path bound (Sec. 5)", step_oversquashing),
    ("depth", "The depth limit (Prop. 5.2)", step_depth),
    ("patching", "Where the difference fades: patching", step_patching),
    ("tasks", "Copying and counting (Sec. 3)", step_tasks),
    ("theory", "Theory checks on the synthetic lab (App. B, C.3, C.4)", step_theory),
    ("attention", "Attention views", step_attention),
]
