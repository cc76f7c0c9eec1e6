"""Validating the path-product bound against gradient sensitivity, and the copying
studies of the paper's Fig. 2 seen through sensitivity (Sec. 5).

* :func:`spearman` — rank correlation (average ranks for ties), torch/pandas only.
* :func:`bound_vs_sensitivity` — both analysers on one prompt, their Spearman
  correlation over positions (all positions, and the sequence items only).
* :func:`copy_study` — that comparison over many copying prompts (``copy_last`` /
  ``copy_first`` at several lengths), with the U-shape numbers and the depth profile.
* :func:`hint_study` — how the hint (Fig. 2b) and alternating digits (Fig. 2c) change
  the last token's sensitivity to the digit it must copy.

Long runs append one row per prompt to a results directory when ``out=`` is given
(:func:`~tl_glasses.sweeps.run_rows`), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd
import torch

from ..errors import GlassesError
from ..results import Result, register_result
from ..sweeps import run_rows
from .paths import capture_patterns, depth_profile, last_row, path_bound
from .sensitivity import _model_name, sensitivity, u_shape

__all__ = [
    "spearman",
    "bound_vs_sensitivity",
    "BoundComparison",
    "copy_items",
    "copy_study",
    "hint_study",
    "StudyResult",
]


def _as_float64(a):
    import numpy as np

    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).cpu().flatten().numpy()
    return np.asarray(a, dtype=np.float64).flatten()  # never through float32


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length vectors (ties get average ranks)."""
    x, y = pd.Series(_as_float64(a)), pd.Series(_as_float64(b))
    if len(x) != len(y):
        raise GlassesError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 3:
        raise GlassesError(f"spearman needs at least 3 values, got {len(x)}")
    rx, ry = x.rank(method="average"), y.rank(method="average")
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(rx.corr(ry))


# --------------------------------------------------------------------------- one prompt


@register_result
@dataclass(repr=False)
class BoundComparison(Result):
    """Gradient sensitivity and the path bound at every position of one prompt.

    ``df``: ``position``, ``token``, ``sensitivity``, ``bound``, ``in_sequence``;
    ``meta["spearman"]`` (all positions) and ``meta["spearman_sequence"]`` (the items
    of the sequence only, when known).
    """

    title = "bound vs sensitivity"

    @property
    def values(self) -> torch.Tensor:
        return torch.tensor(self.df["sensitivity"].to_numpy())

    def summary(self) -> str:
        s = f"Spearman(bound, {self.meta.get('method')} sensitivity) = {self.meta.get('spearman'):.3f} over {len(self.df)} positions"
        if self.meta.get("spearman_sequence") is not None:
            s += f"; {self.meta['spearman_sequence']:.3f} over the sequence items"
        return s

    def plot(self, ax=None, *, kind: str = "scatter"):
        """``kind="scatter"``: bound vs sensitivity (log–log); ``"position"``: both
        (each divided by its sum) vs position on a log axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 4) if kind == "scatter" else (7, 3.2))
        df = self.df
        if kind == "scatter":
            seq = df["in_sequence"].to_numpy(bool)
            ax.scatter(df["bound"][~seq], df["sensitivity"][~seq], s=10, c="0.6", label="prompt text")
            ax.scatter(df["bound"][seq], df["sensitivity"][seq], s=12, c="C3", label="sequence items")
            ax.scatter(df["bound"].iloc[-1:], df["sensitivity"].iloc[-1:], s=40, marker="*", c="k", label="last token")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"path bound ({self.meta.get('variant')})")
            ax.set_ylabel(f"‖∂y_n/∂h_i‖ ({self.meta.get('method')})")
            ax.legend(fontsize=7)
            ax.set_title(f"{self.meta.get('model', '')}: Spearman {self.meta.get('spearman'):.2f}", fontsize=9)
        else:
            for col, c in (("sensitivity", "C0"), ("bound", "C1")):
                v = df[col] / df[col].sum()
                ax.plot(df["position"], v, lw=1.2, color=c, label=col)
            ax.set_yscale("log")
            ax.set_xlabel("position i")
            ax.set_ylabel("share of the sum")
            ax.legend(fontsize=7)
        return ax.figure


def bound_vs_sensitivity(
    model,
    prompt,
    *,
    method: str = "jacobian",
    variant: str = "bound",
    heads: str = "mean",
    beta: float | str = 1.0,
    positions: Sequence[int] | None = None,
    sens=None,
    **sensitivity_kw: Any,
) -> BoundComparison:
    """Run :func:`~tl_glasses.sensitivity` and :func:`~tl_glasses.path_bound` on the same
    tokens and rank-correlate them over positions (``positions``: the sequence items,
    for a second correlation restricted to them). Pass ``sens=`` (a
    :class:`~tl_glasses.analysis.sensitivity.SensitivityResult` for this prompt, one wrt
    hook) to reuse a sensitivity already computed."""
    if sens is None:
        sens = sensitivity(model, prompt, method=method, **sensitivity_kw)
    else:
        if sens.tensors["values"].shape[0] != 1:
            raise GlassesError("sens= must hold one wrt hook (values of shape [n])")
        method = sens.meta.get("method", method)
        from .._core import as_tokens

        given = as_tokens(model, prompt).cpu()[0]
        if not torch.equal(given, sens.tokens.cpu()):
            raise GlassesError("sens= was computed on other tokens than this prompt")
    tokens = sens.tokens
    bound = path_bound(model, tokens, variant=variant, heads=heads, beta=beta)
    n = tokens.numel()
    in_seq = torch.zeros(n, dtype=torch.bool)
    if positions is not None:
        in_seq[torch.as_tensor(list(positions), dtype=torch.long)] = True
    s = sens.values.double()
    b = bound.values.double()
    df = pd.DataFrame({
        "position": range(n),
        "token": sens.df["token"].iloc[:n].tolist(),
        "sensitivity": s.numpy(),
        "bound": b.numpy(),
        "in_sequence": in_seq.numpy(),
    })
    meta = dict(
        model=_model_name(model), method=method, variant=variant, heads=heads, n_tokens=n,
        beta=bound.meta["beta"],
        spearman=spearman(b, s),
        spearman_sequence=spearman(b[in_seq], s[in_seq]) if int(in_seq.sum()) >= 3 else None,
        spearman_excluding_first=spearman(b[1:], s[1:]) if n >= 4 else None,
    )
    return BoundComparison(df=df, meta=meta, tensors={"tokens": tokens})


# --------------------------------------------------------------------------- studies


@register_result
@dataclass(repr=False)
class StudyResult(Result):
    """One row per prompt (copy study) or per condition (hint study)."""

    title = "over-squashing study"

    @property
    def values(self) -> torch.Tensor:
        col = "answer_share" if "condition" in self.df else "spearman"
        return torch.tensor(self.df[col].to_numpy(dtype=float))

    def summary(self) -> str:
        if "condition" not in self.df and "spearman" in self.df:
            parts = []
            for m, g in self.df.groupby("model"):
                p = f"{m}: median Spearman {g['spearman'].median():.3f} (β=1)"
                if "spearman_auto" in g:
                    p += f", {g['spearman_auto'].median():.3f} (β=auto)"
                parts.append(p + f" over {len(g)} prompts")
            return "; ".join(parts)
        return f"{len(self.df)} conditions"

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.2))
        df = self.df
        is_copy = "condition" not in df and "spearman" in df
        if is_copy:
            for (model, task), g in df.groupby(["model", "task"]):
                ax.plot(g["n_items"], g["spearman"], "o-", ms=3, label=f"{model} {task} β=1")
                if "spearman_auto" in g:
                    ax.plot(g["n_items"], g["spearman_auto"], "s--", ms=3, label=f"{model} {task} β=auto")
            ax.set_xlabel("sequence length (items)")
            ax.set_ylabel("Spearman(bound, sensitivity)")
            ax.set_ylim(-1, 1)
            ax.axhline(0, color="0.8", lw=0.8)
        else:
            labels = [f"{m}\n{c}" for m, c in zip(df["model"], df["condition"])]
            ax.bar(range(len(df)), df["answer_rel"], color="C2")
            ax.set_xticks(range(len(df)))
            ax.set_xticklabels(labels, fontsize=6)
            ax.set_ylabel("sensitivity at the answer digit\n/ mean over the digits")
        ax.legend(fontsize=6) if is_copy else None
        return ax.figure


def copy_items(model, lengths: Iterable[int], *, tasks: Sequence[str] = ("copy_last", "copy_first"),
               **opts: Any):
    """The copying prompts, tokenised with every digit one token:
    ``[(task, n, TokenizedItems)]``."""
    from ..tasks.generators import get_task
    from ..tasks.tokenization import tokenize_items

    out = []
    for task in tasks:
        t = get_task(task)
        for n in lengths:
            item = t.item(int(n), **opts)
            ti = tokenize_items(model, item.template, item.items, sep=item.sep)
            out.append((task, int(n), ti))
    return out


BOUNDS = {"": ("bound", 1.0), "_auto": ("bound", "auto"), "_attention": ("attention", 1.0)}


def copy_study(
    model,
    lengths: Iterable[int] = range(4, 44, 4),
    *,
    tasks: Sequence[str] = ("copy_last", "copy_first"),
    method: str = "jacobian",
    heads: str = "mean",
    probes: int = 64,
    out=None,
    progress: bool = True,
) -> StudyResult:
    """Bound vs sensitivity over copying prompts. Per prompt: the Spearman correlation
    between gradient sensitivity and the path bound with β = 1 (``spearman``), with
    β = "auto" (``spearman_auto``) and plain attention (``spearman_attention``), over
    all positions and over the sequence items only (``spearman_seq*``); the one-backward
    proxy (top-1 logit gradient) against the exact values; the U-shape numbers over the
    sequence items (sensitivity and bound); the sensitivity at the digit to copy; and
    the depth profile's last-row first-token mass after each layer (rollout)."""
    lengths = [int(n) for n in lengths]
    items = copy_items(model, lengths, tasks=tasks)
    config = dict(study="copy", model=_model_name(model), method=method, bounds=list(BOUNDS),
                  heads=heads, dtype=str(next(model.parameters()).dtype),
                  probes=probes if method == "hutchinson" else None)
    skw = dict(probes=probes) if method == "hutchinson" else {}
    prompts = {(task, n): ti for task, n, ti in items}

    def compute(item):
        task, n = item["task"], item["n_items"]
        ti = prompts[(task, n)]
        sens = sensitivity(model, ti.tokens, method=method, **skw)
        s = sens.values.double()
        seq = ti.item_positions
        target = seq[-1] if task == "copy_last" else seq[0]
        row = dict(model=_model_name(model), task=task, n_items=n, n_tokens=ti.n_tokens, method=method)
        if "stderr_sq" in sens.tensors:  # Hutchinson: median relative standard error of ‖J_i‖²
            row["median_rel_se"] = float((sens.tensors["stderr_sq"][0] / sens.values_sq.clamp_min(1e-300)).median())
        pats = capture_patterns(model, ti.tokens, heads=heads, norms=True)
        row["beta_auto"] = [round(float(p.resid_ratio), 4) for p in pats]
        bounds = {k: last_row(pats, variant=v, beta=b) for k, (v, b) in BOUNDS.items()}
        for key, b in bounds.items():
            row[f"spearman{key}"] = spearman(b, s)
            row[f"spearman_seq{key}"] = spearman(b[seq], s[seq]) if len(seq) >= 3 else float("nan")
        for key in ("", "_auto"):
            bu = u_shape(bounds[key], seq) if len(seq) >= 3 else {}
            row.update({f"bound{key}_{k}": x for k, x in bu.items()})
        # the one-backward proxy: gradient norm of the top-1 logit (docs/concepts.md, "Over-squashing")
        g = sensitivity(model, ti.tokens, method="scalar").values.double()
        row["spearman_scalar_vs_sens"] = spearman(g, s)
        row["spearman_auto_vs_scalar"] = spearman(bounds["_auto"], g)
        su = u_shape(s, seq) if len(seq) >= 3 else {}
        row.update({f"sens_{k}": x for k, x in su.items()})
        row["answer_sens"] = float(s[target])
        row["answer_rel"] = float(s[target] / s[seq].mean())
        row["answer_rank"] = int((s[seq] > s[target]).sum()) + 1
        row["first_pos_share"] = float(s[0] / s.sum())
        row["last_pos_share"] = float(s[-1] / s.sum())
        d = depth_profile(model, ti.tokens)
        row["first_token_mass_final"] = float(d.values[-1])
        row["first_token_mass_by_layer"] = [round(float(x), 6) for x in d.values]
        return row

    df = run_rows([dict(task=task, n_items=n) for task, n in prompts], compute, out=out, config=config,
                  key=("task", "n_items"), progress=progress)
    return StudyResult(df=df, meta=config)


def hint_study(
    model,
    n_items: int = 24,
    *,
    task: str = "copy_last",
    conditions: dict[str, dict] | None = None,
    method: str = "jacobian",
    out=None,
    progress: bool = True,
) -> StudyResult:
    """Sensitivity of the last token to the digit it must copy, with and without the
    paper's hint (Fig. 2b) and alternating digits (Fig. 2c).

    Per condition: ``answer_sens`` (‖∂y_n/∂h_i‖ at the answer digit), ``answer_rel``
    (over the mean across the sequence's digits), ``answer_rank`` among the digits,
    ``answer_share`` (of the total over all positions), the same for the path bound,
    and the number of tokens between the answer digit and the last token.
    """
    conditions = conditions or {
        "baseline": {},
        "hint": {"hint": True},
        "alternating": {"alternating": True},
        "hint+alternating": {"hint": True, "alternating": True},
    }
    config = dict(study="hint", model=_model_name(model), task=task, n_items=int(n_items), method=method,
                  conditions=conditions)
    prompts = {}
    for name, opts in conditions.items():
        (_, _, ti), = copy_items(model, [n_items], tasks=[task], **opts)
        prompts[name] = ti

    def compute(item):
        name = item["condition"]
        ti = prompts[name]
        s = sensitivity(model, ti.tokens, method=method).values.double()
        pats = capture_patterns(model, ti.tokens, norms=True)
        b = last_row(pats, variant="bound", beta=1.0)
        ba = last_row(pats, variant="bound", beta="auto")
        seq = ti.item_positions
        target = seq[-1] if task == "copy_last" else seq[0]
        return dict(
            model=_model_name(model), condition=name, n_tokens=ti.n_tokens, answer_pos=target,
            distance_to_last=ti.n_tokens - 1 - target,
            answer_sens=float(s[target]), answer_rel=float(s[target] / s[seq].mean()),
            answer_rank=int((s[seq] > s[target]).sum()) + 1, answer_share=float(s[target] / s.sum()),
            bound_answer_share=float(b[target] / b.sum()), bound_answer_rel=float(b[target] / b[seq].mean()),
            bound_auto_answer_rel=float(ba[target] / ba[seq].mean()),
            spearman=spearman(b, s), spearman_auto=spearman(ba, s),
        )

    df = run_rows([dict(condition=name) for name in prompts], compute, out=out, config=config,
                  key=("condition",), progress=progress)
    return StudyResult(df=df, meta=config)
