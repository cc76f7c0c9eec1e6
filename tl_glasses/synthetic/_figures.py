"""Result types of the theory checks: a tidy table, one-line summaries, a figure each."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..results import Result, register_result

__all__ = [
    "SoftmaxDecayResult",
    "TotalVariationResult",
    "CollapseByPEResult",
    "CountingRatioResult",
    "CountingPrecisionResult",
    "DepthLimitResult",
    "loglog_slope",
]

_PE_COLORS = {"none": "C0", "sinusoidal": "C1", "alibi": "C2", "rope": "C3"}


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the positive entries
    (``-1`` means ``y ~ 1/x``); NaN with fewer than two usable points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _trailing_true(ok) -> int:
    """How many entries at the end of ``ok`` are true."""
    k = 0
    for v in list(ok)[::-1]:
        if not v:
            break
        k += 1
    return k


def _axes(ax, figsize=(6.4, 4.2)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _geomean(s: pd.Series) -> float:
    s = s[s > 0]
    return float(np.exp(np.log(s).mean())) if len(s) else 0.0


@register_result
class SoftmaxDecayResult(Result):
    """Lemma B.1: the softmax weight of one fixed entry as entries are appended.

    Columns: ``trial, n, weight`` (the fixed entry's weight among ``n`` entries) and
    ``bound`` (``e^{2M}/n`` for entries in ``[-M, M]``)."""

    title = "Lemma B.1: softmax weight of a fixed entry"

    def summary(self) -> str:
        m = self.meta
        return (
            f"weight fell at every one of {m['n_appends']} appends in all {m['trials']} trials "
            f"(strictly: {m['strictly_decreasing']}); max weight/bound {m['max_weight_over_bound']:.3g}; "
            f"below p={m['p']:g} from n={m['n_below_p_max']} (guaranteed by n>={m['n_guaranteed']})"
        )

    def plot(self, ax=None):
        fig, ax = _axes(ax)
        g = self.df.groupby("n")["weight"]
        n = np.array(sorted(self.df["n"].unique()))
        ax.fill_between(n, g.min().values, g.max().values, alpha=0.3, label="range over trials")
        ax.plot(n, g.median().values, marker="o", ms=3, label="median weight")
        ax.plot(n, self.df.groupby("n")["bound"].first().values, "k--", label=r"bound $e^{2M}/n$")
        ax.axhline(self.meta["p"], color="gray", lw=0.8, ls=":", label=f"p = {self.meta['p']:g}")
        ax.set(xscale="log", yscale="log", xlabel="number of entries n", ylabel="softmax weight of the fixed entry",
               title=self.title)
        ax.legend(fontsize=8)
        return fig


@register_result
class TotalVariationResult(Result):
    """Lemma B.2 (Fig. 9) and Prop. B.4: total variation between ``softmax(x)`` and
    ``softmax(x*)`` against the length ``n``.

    Columns: ``kind`` (``"fixed k"``: the first ``k`` entries perturbed, Lemma B.2;
    ``"fraction"``: every other entry shifted by ``delta``, Prop. B.4), ``trial, n,
    tv`` (``0.5 * ||p - p*||_1``), ``l1`` (``||p - p*||_1``, the paper's "TV"),
    ``bound`` (fixed k: ``max(p(K), p*(K))``, an upper bound; fraction: the closed form
    ``s(1-s)(e^delta - 1)/(1 - s + s e^delta)`` with ``s = p(K)``, which the TV equals)."""

    title = "Lemma B.2 / Fig. 9 and Prop. B.4: TV between softmax(x) and softmax(x*)"

    def summary(self) -> str:
        m = self.meta
        return (
            f"fixed k={m['k']}: TV ~ n^{m['slope_fixed_k']:.2f}, TV({m['n_lo']})/TV({m['n_hi']}) = "
            f"{m['ratio_fixed_k']:.1f}; fraction 1/2 (delta={m['delta']}): TV from {m['min_tv_fraction']:.3f} "
            f"to {m['max_tv_fraction']:.3f} (limit {m['limit_fraction']:.3f}), max |TV - closed form| "
            f"{m['max_closed_form_error']:.1e}"
        )

    def plot(self, ax=None):
        fig, ax = _axes(ax)
        for kind, color in (("fixed k", "C0"), ("fraction", "C3")):
            d = self.df[self.df.kind == kind]
            if d.empty:
                continue
            g = d.groupby("n")
            n = np.array(sorted(d["n"].unique()))
            label = f"first k={self.meta['k']} entries perturbed (Lemma B.2)" if kind == "fixed k" else \
                f"every other entry + {self.meta['delta']} (Prop. B.4)"
            ax.fill_between(n, g["tv"].min().values, g["tv"].max().values, color=color, alpha=0.25)
            ax.plot(n, g["tv"].mean().values, marker="o", ms=3, color=color, label=label)
            if kind == "fixed k":
                ax.plot(n, g["bound"].mean().values, color=color, ls="--", lw=0.8, label=r"bound max(p(K), p*(K))")
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel="total variation", title=self.title)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        return fig


@register_result
class CollapseByPEResult(Result):
    """Thm B.3 (Figs. 8, 10): distance between the final-token representations of a
    sequence and its last-token-repeated twin, per positional encoding.

    Columns: ``pe, qkv, trial, n, l2, linf`` (of ``y_n(v) - y_{n+1}(v*)``, ``y`` =
    ``ln_final.hook_out``), ``rel`` (``l2 / ||y_n(v)||``), ``new_weight`` (attention
    weight, head mean, that the twin's last query gives its extra token)."""

    title = "Thm B.3: representational collapse by positional encoding"

    def slopes(self, upper_half: bool = True) -> dict[str, float]:
        """Log-log slope of the mean (geometric) distance against n, per encoding."""
        out = {}
        for pe, d in self.df.groupby("pe", sort=False):
            g = d.groupby("n")["l2"].apply(_geomean)
            if upper_half:
                g = g[g.index >= np.sqrt(g.index.min() * g.index.max())]
            out[pe] = loglog_slope(g.index.values, g.values)
        return out

    def curve(self, pe: str) -> pd.Series:
        """Geometric mean over trials of the L2 distance, indexed by n."""
        return self.df[self.df.pe == pe].groupby("n")["l2"].apply(_geomean)

    def summary(self) -> str:
        parts = []
        for pe, s in self.slopes().items():
            c = self.curve(pe)
            parts.append(f"{pe}: {c.iloc[0]:.2g}@{c.index[0]} -> {c.iloc[-1]:.2g}@{c.index[-1]} (slope {s:.2f})")
        return f"{self.meta.get('figure', '')} qkv={self.meta.get('qkv')}: " + "; ".join(parts)

    def plot(self, ax=None):
        fig, ax = _axes(ax)
        for pe, d in self.df.groupby("pe", sort=False):
            g = d.groupby("n")["l2"]
            n = np.array(sorted(d["n"].unique()))
            color = _PE_COLORS.get(pe)
            ax.fill_between(n, g.min().values, g.max().values, color=color, alpha=0.15)
            ax.plot(n, g.apply(_geomean).values, marker="o", ms=3, color=color, label=pe)
        n = np.array(sorted(self.df["n"].unique()), dtype=float)
        first = self.df[self.df.n == n[0]]["l2"]
        ax.plot(n, _geomean(first) * n[0] / n, "k:", lw=0.8, label=r"$\propto 1/n$")
        ax.set(xscale="log", yscale="log", xlabel="sequence length n",
               ylabel=r"$\|y_n(v) - y_{n+1}(v^*)\|_2$",
               title=f"{self.meta.get('figure', 'Thm B.3')}: collapse by PE (qkv={self.meta.get('qkv')}, "
               f"std={self.meta.get('init_std', 0):.3g})")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        return fig


@register_result
class CountingRatioResult(Result):
    """Prop. B.9: sequences with the same token ratio ("10", "1100", …) against each other.

    Columns: ``pe, causal, dtype, short, long, same_ratio, bitwise`` (every position of
    ``long`` bitwise equal to the position of the same token in ``short``),
    ``max_abs`` and ``rel`` (max difference, over ``max |y|``), ``ulps`` (``rel / eps``
    of the dtype)."""

    title = "Prop. B.9: same token ratio, same representation"

    def summary(self) -> str:
        d = self.df
        nope = d[(d.pe == "none") & (~d.causal) & d.same_ratio]
        ctrl = d[~((d.pe == "none") & (~d.causal) & d.same_ratio)]
        parts = []
        for dt, g in nope.groupby("dtype", sort=False):
            parts.append(f"{dt}: {int(g.bitwise.sum())}/{len(g)} bitwise, max {g.ulps.max():.1f} eps")
        return (
            "no PE, no causal mask, same ratio -> " + "; ".join(parts)
            + f". Every other case differs by at least {ctrl.rel.min():.2g} (relative)"
        )

    def plot(self, ax=None):
        fig, ax = _axes(ax, figsize=(7.5, 4.2))
        d = self.df.copy()
        d["case"] = d.apply(lambda r: f"{r.pe}{'' if r.causal else ', bidir'}", axis=1)
        d["pair"] = d["short"] + " vs " + d["long"]
        d["rel_plot"] = d["rel"].clip(lower=1e-18)
        cases = list(dict.fromkeys(d["case"]))
        for i, (dt, g) in enumerate(d.groupby("dtype", sort=False)):
            x = np.array([cases.index(c) for c in g["case"]]) + 0.25 * (i - 1)
            marker = np.where(g["same_ratio"], "o", "x")
            for m in ("o", "x"):
                sel = marker == m
                ax.scatter(x[sel], g["rel_plot"].values[sel], marker=m, s=18, color=f"C{i}",
                           label=f"{dt} ({'same ratio' if m == 'o' else 'different ratio'})")
        ax.set_xticks(range(len(cases)), cases, rotation=30, fontsize=8)
        ax.set(yscale="log", ylabel="max |y - y'| / max |y|  (1e-18 = bitwise equal)", title=self.title)
        ax.legend(fontsize=7, ncol=2)
        return fig


@register_result
class CountingPrecisionResult(Result):
    """Cor. B.10: ``prefix + 1^n`` against ``prefix + 1^(n+1)`` in finite precision.

    Columns: ``pe, qkv, dtype, n, bitwise`` (last-token final representations bitwise
    equal), ``same_argmax``, ``rel`` (relative L2 distance in that dtype) and
    ``ref_rel`` (the same in float64)."""

    title = "Cor. B.10: 1^n vs 1^(n+1) become indistinguishable"

    def collapse_lengths(self, min_run: int = 2) -> pd.DataFrame:
        """Per (pe, qkv, dtype): ``collapse_n``, the smallest tested ``n`` from which every
        longer tested pair is bitwise equal, when that holds for at least ``min_run``
        tested lengths (NaN otherwise: not established within the tested lengths);
        ``argmax_n``, the same for equal next-token argmax; ``resolution_n``, the
        smallest n from which the float64 relative distance stays below the dtype's
        unit roundoff (``eps/2``)."""

        def tail_start(n, ok, run):
            k = _trailing_true(ok)
            return float(n[len(ok) - k]) if k >= run else math.nan

        rows = []
        for (pe, qkv, dt), g in self.df.groupby(["pe", "qkv", "dtype"], sort=False):
            g = g.sort_values("n")
            n = g["n"].values
            eps = float(np.finfo(np.float32).eps) if dt == "float32" else {"bfloat16": 2.0**-7, "float16": 2.0**-10,
                                                                           "float64": 2.0**-52}.get(dt, math.nan)
            rows.append({
                "pe": pe, "qkv": qkv, "dtype": dt,
                "collapse_n": tail_start(n, g["bitwise"].values, min_run),
                "equal_tail": _trailing_true(g["bitwise"].values),
                "argmax_n": tail_start(n, g["same_argmax"].values, min_run),
                "resolution_n": tail_start(n, (g["ref_rel"] < eps / 2).values, 1),
                "max_tested": int(n[-1]),
            })
        return pd.DataFrame(rows)

    def summary(self) -> str:
        t = self.collapse_lengths()
        parts = [
            f"{r.pe}/{r.qkv}/{r.dtype}: " + (f"n>={int(r.collapse_n)}" if r.collapse_n == r.collapse_n else
                                             f"none up to {r.max_tested}")
            for r in t.itertuples()
        ]
        return "bitwise-equal from " + "; ".join(parts)

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        qkvs = list(dict.fromkeys(self.df["qkv"]))
        dts = [d for d in ("float32", "float16", "bfloat16") if d in set(self.df["dtype"])]
        dts += [d for d in dict.fromkeys(self.df["dtype"]) if d not in dts]
        if ax is not None:
            qkvs, dts = qkvs[:1], dts[:1]
            fig, axes = ax.figure, np.array([[ax]])
        else:
            fig, axes = plt.subplots(len(qkvs), len(dts), figsize=(4.6 * len(dts), 3.6 * len(qkvs)),
                                     squeeze=False, sharey=True)
        table = self.collapse_lengths()
        for i, qkv in enumerate(qkvs):
            for j, dt in enumerate(dts):
                a = axes[i, j]
                d = self.df[(self.df.qkv == qkv) & (self.df.dtype == dt)]
                for pe, g in d.groupby("pe", sort=False):
                    g = g.sort_values("n")
                    color = _PE_COLORS.get(pe)
                    a.plot(g["n"], g["ref_rel"], color=color, lw=0.7, alpha=0.6)
                    eq = g["bitwise"].values
                    a.plot(g["n"][~eq], g["rel"][~eq], "o", ms=2.5, color=color, label=pe)
                    a.plot(g["n"][eq], np.full(eq.sum(), 1e-12), "|", ms=8, color=color)
                    c = table[(table.pe == pe) & (table.qkv == qkv) & (table.dtype == dt)]["collapse_n"]
                    if len(c) and c.iloc[0] == c.iloc[0]:
                        a.axvline(c.iloc[0], color=color, ls="--", lw=0.8)
                a.set(xscale="log", yscale="log", ylim=(3e-13, 3), xlabel="number of ones n",
                      title=f"{dt}, qkv={qkv}")
                a.title.set_fontsize(9)
                if j == 0:
                    a.set_ylabel("relative distance\n(dots: in dtype; line: float64; | : bitwise equal)", fontsize=8)
        axes[0, 0].legend(fontsize=7, title="dashed: collapse n", title_fontsize=7)
        fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        return fig


@register_result
class DepthLimitResult(Result):
    """Props. 5.2/B.8, Lemmas B.6/B.7: products of causal attention matrices against depth.

    Columns: ``source`` (``"random"``: one random causal attention matrix repeated, as
    in Prop. B.8; ``"model"``: the SyntheticDecoder's own head-mean patterns, one per
    layer), ``depth``, ``dist`` (max entry of ``|P - 1 e_1^T|``, ``P`` the product of
    ``(A + I)/2``), ``first_col_last_row`` (``P[n-1, 0]``), ``lambda2`` (largest diagonal
    entry of ``P`` after the first: its second-largest eigenvalue), ``predicted``
    (``lambda2(A~)^depth`` for the repeated matrix)."""

    title = "Prop. B.8: attention products approach the first-column limit"

    def summary(self) -> str:
        m = self.meta
        parts = []
        for src, d in self.df.groupby("source", sort=False):
            d = d.sort_values("depth")
            parts.append(f"{src}: dist {d.dist.iloc[0]:.2g}@{int(d.depth.iloc[0])} -> {d.dist.iloc[-1]:.2g}"
                         f"@{int(d.depth.iloc[-1])}, last-row first-column mass {d.first_col_last_row.iloc[-1]:.4f}")
        extra = ""
        if "rate" in m:
            extra = f"; repeated-matrix decay rate {m['rate']:.4f} vs lambda2 {m['lambda2']:.4f}"
        return "; ".join(parts) + extra + f"; eigenvalues = diagonal to {m.get('eig_error', float('nan')):.1e}"

    def plot(self, ax=None):
        fig, ax = _axes(ax)
        for i, (src, d) in enumerate(self.df.groupby("source", sort=False)):
            d = d.sort_values("depth")
            ax.plot(d["depth"], d["dist"].clip(lower=1e-300), color=f"C{i}", label=f"{src}: max |P - 1e1ᵀ|")
            if d["predicted"].notna().any():
                ax.plot(d["depth"], d["predicted"], color=f"C{i}", ls="--", lw=0.8, label=f"{src}: λ₂^L")
        ax.set(yscale="log", xlabel="depth L (layers)", ylabel="distance to the first-column limit",
               title=self.title)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        return fig
