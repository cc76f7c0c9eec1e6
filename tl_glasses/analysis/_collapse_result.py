"""The result of a collapse sweep: :class:`CollapseResult`, its collapse lengths and its
plots (Fig. 5 style). Import it from :mod:`tl_glasses.analysis.collapse`, which
re-exports it; importing either module registers it for :meth:`Result.load
<tl_glasses.results.Result.load>` (results saved before the split record
``tl_glasses.analysis.collapse`` as their module)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import GlassesError
from ..results import Result, register_result
from ._distance import _DTYPE_NAMES, _dtype, _nan, dtype_name

__all__ = ["CollapseResult"]


@register_result
@dataclass(repr=False)
class CollapseResult(Result):
    """Rows of a collapse sweep: one per length × dtype × mode × mitigation.

    ``mode`` is ``"native"`` (the model run in that dtype) or ``"round"`` (float32
    representations rounded to the dtype afterwards — an estimate, labelled so).
    """

    title = "representational collapse"

    def arms(self) -> pd.DataFrame:
        return self.df[["dtype", "mode", "mitigation"]].drop_duplicates().reset_index(drop=True)

    def curve(self, dtype="float32", mitigation: str | None = "none", mode: str = "native") -> pd.DataFrame:
        dt = dtype if isinstance(dtype, str) and dtype in _DTYPE_NAMES.values() else dtype_name(_dtype(dtype))
        mit = "none" if mitigation in (None, "none") else getattr(mitigation, "label", mitigation)
        sel = self.df[(self.df["dtype"] == dt) & (self.df["mode"] == mode) & (self.df["mitigation"] == mit)]
        return sel.sort_values("n").reset_index(drop=True)

    def collapse_length(self, dtype="float32", mitigation: str | None = "none", *, mode: str = "native",
                        criterion: str = "bitwise") -> int | None:
        """Smallest ``n`` from which the pair stays collapsed for every larger ``n`` of
        the sweep: ``criterion="bitwise"`` (y(v) and y(v*) identical in that dtype) or
        ``"argmax"`` (same next-token argmax). ``None``: did not collapse in range."""
        col = {"bitwise": "bitwise_equal", "argmax": "same_argmax"}.get(criterion)
        if col is None:
            raise GlassesError(f"criterion is 'bitwise' or 'argmax', not {criterion!r}")
        c = self.curve(dtype, mitigation, mode)
        c = c[c["status"] == "ok"] if "status" in c else c
        if c.empty:
            return None
        held = c[col].fillna(False).astype(bool).to_numpy()
        if not held[-1]:
            return None
        k = len(held) - 1
        while k > 0 and held[k - 1]:
            k -= 1
        return int(c["n"].iloc[k])

    def collapse_table(self) -> pd.DataFrame:
        """Per arm: collapse lengths (bitwise, argmax), the range of n, and the smallest
        distance seen above the noise floor."""
        rows = []
        for _, arm in self.arms().iterrows():
            c = self.curve(arm["dtype"], arm["mitigation"], arm["mode"])
            ok = c[c["status"] == "ok"] if "status" in c else c
            above = ok[~ok["below_floor"].astype(bool)]
            rows.append(dict(
                dtype=arm["dtype"], mode=arm["mode"], mitigation=arm["mitigation"],
                n_min=int(c["n"].min()), n_max=int(c["n"].max()), rows=len(c),
                collapse_bitwise=self.collapse_length(arm["dtype"], arm["mitigation"], mode=arm["mode"]),
                collapse_argmax=self.collapse_length(arm["dtype"], arm["mitigation"], mode=arm["mode"],
                                                     criterion="argmax"),
                min_l2=float(above["l2"].min()) if len(above) else _nan(),
                min_rel=float(above["rel"].min()) if len(above) else _nan(),
                n_at_min=int(above.loc[above["l2"].idxmin(), "n"]) if len(above) else None,
                rows_below_floor=int(ok["below_floor"].astype(bool).sum()),
                rows_bitwise_equal=int(ok["bitwise_equal"].astype(bool).sum()),
                nonfinite=int((c["status"] != "ok").sum()) if "status" in c else 0,
            ))
        return pd.DataFrame(rows)

    def summary(self) -> str:
        if self.df.empty:
            return "no rows"
        parts = []
        for _, r in self.collapse_table().iterrows():
            cl = r["collapse_bitwise"]
            what = f"collapses (bitwise) from n={cl}" if cl is not None and not pd.isna(cl) else (
                f"no collapse in n={r['n_min']}..{r['n_max']}")
            md = "" if pd.isna(r["min_l2"]) else f", min L2 {r['min_l2']:.3g} (rel {r['min_rel']:.2g})"
            tag = "" if r["mode"] == "native" else " [round-fp32 estimate]"
            parts.append(f"{r['dtype']}{tag}/{r['mitigation']}: {what}{md}")
        fam = self.meta.get("family", {}).get("name", "?")
        return f"family {fam!r}, {len(self.df)} rows — " + "; ".join(parts)

    def plot(self, ax=None, *, metric: str = "head", dtype=None, mitigation=None, mode=None,
             resolution: bool = True, floor: bool = True):
        """Fig. 5 style: distance vs n (log y); ``metric="head"`` draws the mean over
        last-layer heads with the min–max band, ``"l2"``/``"linf"`` the final
        representation. Dashed: ``floor_factor`` × noise floor; dotted: the dtype's
        resolution at the compared entries; ▽ markers: rows within the noise floor.

        Without ``ax``, one panel per dtype (and per mode: native run / rounded
        estimate), the mitigations side by side in each."""
        import matplotlib.pyplot as plt

        if metric not in ("head", "l2", "linf", "rel"):
            raise GlassesError(f"metric is 'head', 'l2', 'linf' or 'rel', not {metric!r}")
        if ax is None:
            panels = self._filtered_arms(dtype, mitigation, mode)[["dtype", "mode"]].drop_duplicates()
            k = max(1, len(panels))
            cols = min(k, 3)
            rows_ = (k + cols - 1) // cols
            fig, axes = plt.subplots(rows_, cols, figsize=(5.2 * cols, 3.8 * rows_), squeeze=False,
                                     sharey=True)
            for a, (_, pn) in zip(axes.flat, panels.iterrows()):
                self.plot(a, metric=metric, dtype=pn["dtype"], mitigation=mitigation, mode=pn["mode"],
                          resolution=resolution, floor=floor)
                a.set_title(f"{pn['dtype']}" + (" — fp32 rounded (estimate)" if pn["mode"] == "round" else ""),
                            fontsize=9)
            for a in list(axes.flat)[k:]:
                a.set_visible(False)
            fam = self.meta.get("family", {}).get("name", "")
            fig.suptitle(f"{self.meta.get('model', '')} · {fam} ({self.meta.get('level', '')} level)", fontsize=10)
            fig.tight_layout()
            return fig
        arms = self._filtered_arms(dtype, mitigation, mode)
        self._draw(ax, arms, metric, resolution, floor)
        return ax.figure

    def _filtered_arms(self, dtype, mitigation, mode) -> pd.DataFrame:
        arms = self.arms()
        if dtype is not None:
            dn = {dtype_name(_dtype(d)) for d in (dtype if isinstance(dtype, (list, tuple)) else [dtype])}
            arms = arms[arms["dtype"].isin(dn)]
        if mitigation is not None:
            ms = mitigation if isinstance(mitigation, (list, tuple)) else [mitigation]
            arms = arms[arms["mitigation"].isin([getattr(m, "label", m) or "none" for m in ms])]
        if mode is not None:
            arms = arms[arms["mode"] == mode]
        return arms

    def _draw(self, ax, arms, metric, resolution, floor) -> None:
        import matplotlib.pyplot as plt

        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (_, arm) in enumerate(arms.iterrows()):
            c = self.curve(arm["dtype"], arm["mitigation"], arm["mode"])
            c = c[c["status"] == "ok"] if "status" in c else c
            if c.empty:
                continue
            col = colors[i % len(colors)]
            label = f"{arm['dtype']}" + (" (round fp32)" if arm["mode"] == "round" else "") + \
                ("" if arm["mitigation"] == "none" else f", {arm['mitigation']}")
            x = c["n"].to_numpy()
            if metric == "head":
                y, fl, res = c["head_mean"].to_numpy(float), c["floor_head"].to_numpy(float), c["ulp_z"]
                ax.fill_between(x, c["head_min"].to_numpy(float), c["head_max"].to_numpy(float),
                                color=col, alpha=0.18, linewidth=0)
            else:
                y = c[metric].to_numpy(float)
                fl = c["floor_l2"].to_numpy(float) if metric != "linf" else c["floor_linf"].to_numpy(float)
                if metric == "rel":
                    fl = fl / c["norm_y"].to_numpy(float)
                res = c["ulp_y"] if metric != "rel" else c["eps"]
            ax.plot(x, y, "-o", ms=2.5, color=col, label=label)
            ff = c["floor_factor"].to_numpy(float)
            below = ~np.isfinite(y)
            if floor and np.isfinite(fl).any():
                # a floor of exactly 0 has no place on a log axis: leave it out rather than
                # let the axis clip it into a vertical stroke; "_" marks a lone positive floor
                shown = np.where(fl * ff > 0, fl * ff, np.nan)
                ax.plot(x, shown, "--", marker="_", ms=7, color=col, lw=0.7, alpha=0.6)
            if below.any():
                ax.plot(x[below], np.where(np.isfinite(fl[below] * ff[below]) & (fl[below] > 0),
                                           fl[below] * ff[below], np.nan), "v", mfc="none", color=col)
            if resolution and np.isfinite(res).any():
                ax.axhline(float(np.nanmedian(res)), color=col, ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("n (items in v)")
        ax.set_ylabel({"head": "last-layer head distance ‖z(v)−z(v*)‖", "l2": "‖y_n(v) − y_n+1(v*)‖₂",
                       "linf": "‖y_n(v) − y_n+1(v*)‖∞", "rel": "relative L2"}[metric])
        fam = self.meta.get("family", {}).get("name", "")
        ax.set_title(f"{self.meta.get('model', '')} · {fam} ({self.meta.get('level', '')} level)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
