"""Result objects of patching: :class:`PatchResult` and :class:`AttributionCheck`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..errors import GlassesError, UnknownNameError
from ..results import Result, register_result
from ._patch_align import Alignment

__all__ = ["PatchResult", "AttributionCheck", "correlations"]


@register_result
@dataclass(repr=False)
class PatchResult(Result):
    """Patching of ``b`` into ``a``: ``df`` has one row per (site, layer, position[, head])
    with ``restored`` (fraction of the a–b metric difference the patch restores),
    ``effect`` (M(patched) − M(a)) and ``patched_metric``; positions are ``a``'s, with
    ``b_position`` the aligned position of ``b`` and ``from_end`` = position − len(a)."""

    title = "activation patching"

    # -- values ----------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.meta.get("sites", []))

    def values_for(self, site: str, what: str = "restored") -> torch.Tensor:
        """``[layer, position]`` (``[layer, position, head]`` for ``z``) of one site."""
        key = f"{what}.{site}"
        if key not in self.tensors:
            raise UnknownNameError("site in this result", site, self.sites)
        return self.tensors[key]

    @property
    def values(self):
        """Restored fractions: a tensor ``[layer, position(, head)]`` when one site was
        patched, else ``{site: tensor}``. Layers and positions are ``meta['layers']``
        and ``meta['positions']`` (a's positions)."""
        if self.meta.get("joint"):
            return torch.tensor(float(self.df["restored"].iloc[0]), dtype=torch.float64)
        if len(self.sites) == 1:
            return self.values_for(self.sites[0])
        return {s: self.values_for(s) for s in self.sites}

    @property
    def restored(self) -> float:
        """The single value of a joint patch."""
        if len(self.df) != 1:
            raise GlassesError("restored is the value of a joint patch (joint=True); read .df or .values")
        return float(self.df["restored"].iloc[0])

    @property
    def alignment(self) -> pd.DataFrame:
        """Each aligned (a position, b position) with their tokens; unmatched b positions too."""
        al = Alignment.from_dict(self.meta["alignment"])
        ta, tb = self.meta.get("tokens_a", []), self.meta.get("tokens_b", [])
        rows = [dict(a_position=p, b_position=q, a_token=ta[p] if p < len(ta) else "",
                     b_token=tb[q] if q < len(tb) else "", region="start" if p == q and p < al.shared_prefix else "end")
                for p, q in zip(al.a_positions, al.b_positions)]
        rows += [dict(a_position=pd.NA, b_position=q, a_token="", b_token=tb[q] if q < len(tb) else "",
                      region="unmatched b") for q in al.unmatched_b]
        rows += [dict(a_position=p, b_position=pd.NA, a_token=ta[p] if p < len(ta) else "", b_token="",
                      region="unmatched a") for p in al.unmatched_a]
        return pd.DataFrame(rows)

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` cells with the largest restored fraction (in absolute value)."""
        return self.df.reindex(self.df["restored"].abs().sort_values(ascending=False).index).head(k)

    def by_layer(self, position: int | None = None) -> pd.DataFrame:
        """Restored fraction per (site, layer) at one position of ``a`` (default: the
        last patched one); for ``z`` the best head."""
        pos = self.meta["positions"][-1] if position is None else position
        sub = self.df[self.df.position == pos]
        return sub.groupby(["site", "layer"], sort=False)["restored"].agg(
            lambda s: s.loc[s.abs().idxmax()] if len(s) else float("nan")).unstack("site")

    def summary(self) -> str:
        m = self.meta
        if m.get("denominator", 1) == 0:
            return (f"{m.get('method')} patching: a and b give the same {m.get('metric')} "
                    f"(M = {m.get('metric_a'):.4g}); nothing to restore")
        best = self.top(1)
        txt = (f"{m.get('method')} patching, metric {m.get('metric')} (M(a)={m.get('metric_a'):.4g}, "
               f"M(b)={m.get('metric_b'):.4g}); {len(self.df)} cells")
        if len(best):
            r = best.iloc[0]
            head = "" if pd.isna(r["head"]) else f" head {int(r['head'])}"
            txt += f"; largest: {r['site']} L{r['layer']} pos {r['position']}{head}: {r['restored']:.3g}"
        if m.get("near_noise_floor"):
            txt += (f". CAUTION: ‖y_a − y_b‖/‖y_b‖ = {m.get('final_rel_distance'):.2g} is within 100× the "
                    f"{m.get('dtype')} resolution; fractions of so small a difference are rounding-dominated")
        return txt

    # -- figures ---------------------------------------------------------------------
    def plot(self, kind: str | None = None, *, site: str | None = None, position: int | None = None, ax=None):
        """``kind``: ``"layers"`` (restored fraction vs layer at one position, one line per
        site; z: best head), ``"heatmap"`` (layer × position of one site, z: best head),
        ``"heads"`` (per-head bars of z at one position, grouped by layer), or None: all
        that apply, side by side. Returns the Figure."""
        import matplotlib.pyplot as plt

        if self.meta.get("joint"):
            raise GlassesError("a joint patch has one value; nothing to plot")
        kinds = ["layers"]
        if len(self.meta["positions"]) > 1:
            kinds.append("heatmap")
        if "z" in self.sites:
            kinds.append("heads")
        if kind is not None:
            if kind not in ("layers", "heatmap", "heads"):
                raise UnknownNameError("plot kind", kind, ["layers", "heatmap", "heads"])
            kinds = [kind]
        if ax is not None:
            kinds = kinds[:1]
            axes = [ax]
            fig = ax.figure
        else:
            fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.8), squeeze=False)
            axes = list(axes[0])
        for k, a in zip(kinds, axes):
            getattr(self, f"_plot_{k}")(a, site=site, position=position)
        fig.suptitle(self._title(), fontsize=9)
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        m = self.meta
        pair = m.get("pair") or {}
        what = f"{pair.get('family')} n={pair.get('n')}" if pair.get("family") else m.get("model", "")
        mit = ""
        if m.get("mitigation_a") or m.get("mitigation_b"):
            mit = f"; a: {m.get('mitigation_a') or '-'}, b: {m.get('mitigation_b') or '-'}"
        return f"{m.get('method')} patching b→a ({what}), metric {m.get('metric')}{mit}"

    def _pos_index(self, position):
        pos = self.meta["positions"]
        p = pos[-1] if position is None else position
        if p not in pos:
            raise GlassesError(f"position {p} was not patched; patched: {pos}")
        return pos.index(p), p

    def _has_heads(self, site: str) -> bool:
        return self.values_for(site).ndim == 3

    def _site_matrix(self, site: str) -> torch.Tensor:
        v = self.values_for(site)
        if v.ndim == 3:  # best head (largest |restored|) per layer, position
            idx = v.abs().nan_to_num(-1).argmax(-1, keepdim=True)
            v = v.gather(-1, idx)[..., 0]
        return v

    def _plot_layers(self, ax, site=None, position=None):
        i, p = self._pos_index(position)
        layers = self.meta["layers"]
        for s in ([site] if site else self.sites):
            v = self._site_matrix(s)[:, i]
            ax.plot(layers, v.numpy(), marker="o", ms=3, label=s + (" (best head)" if self._has_heads(s) else ""))
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axhline(1, color="0.6", lw=0.8, ls="--")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("layer")
        ax.set_ylabel("restored fraction")
        tok = self.meta["tokens_a"][p] if p < len(self.meta.get("tokens_a", [])) else ""
        ax.set_title(f"position {p} ({p - self.meta['alignment']['a_len']} from end) {tok!r}", fontsize=9)
        ax.legend(fontsize=7)

    def _plot_heatmap(self, ax, site=None, position=None):
        s = site or next((x for x in self.sites if not self._has_heads(x)), self.sites[0])
        v = self._site_matrix(s).numpy()
        pos = list(self.meta["positions"])
        # leading positions whose every cell is exactly 0 (the shared prefix: identical
        # activations in a and b) carry nothing: leave them out, and say so
        live = np.flatnonzero(np.nan_to_num(np.abs(v)).sum(0) > 0)
        first = int(live[0]) if len(live) else 0
        first = max(0, min(first, len(pos) - 2))
        v, pos = v[:, first:], pos[first:]
        lim = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
        lim = lim or 1.0
        im = ax.imshow(v, aspect="auto", cmap="RdBu", vmin=-lim, vmax=lim, origin="lower", interpolation="nearest")
        toks = self.meta.get("tokens_a", [])
        n_a = self.meta["alignment"]["a_len"]
        step = max(1, len(pos) // 40)
        ticks = list(range(0, len(pos), step))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{toks[pos[j]] if pos[j] < len(toks) else ''} {pos[j] - n_a}" for j in ticks],
                           fontsize=5, rotation=90)
        ax.set_yticks(range(len(self.meta["layers"])))
        ax.set_yticklabels(self.meta["layers"], fontsize=6)
        ax.set_xlabel("position of a (token, offset from the end)" + (
            f"; positions < {pos[0]} all 0, not shown" if first else ""), fontsize=8)
        ax.set_ylabel("layer")
        ax.set_title(f"{s}{' (best head)' if self._has_heads(s) else ''}: restored fraction", fontsize=9)
        ax.figure.colorbar(im, ax=ax, fraction=0.046)

    def _plot_heads(self, ax, site=None, position=None):
        if "z" not in self.sites:
            raise GlassesError("per-head bars need the z site")
        i, p = self._pos_index(position)
        v = self.values_for("z")[:, i, :].numpy()  # [layer, head]
        L, H = v.shape
        width = 0.8 / H
        x = np.arange(L)
        for h in range(H):
            ax.bar(x + (h - (H - 1) / 2) * width, v[:, h], width, label=f"head {h}")
        ax.set_xticks(x)
        ax.set_xticklabels(self.meta["layers"], fontsize=6)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("layer")
        ax.set_ylabel("restored fraction (z, per head)")
        ax.set_title(f"heads at position {p}", fontsize=9)
        if H <= 16:
            ax.legend(fontsize=6, ncol=2)

    def show_tokens(self, site: str | None = None, layer: int | None = None):
        """A circuitsvis view of ``a``'s tokens coloured by restored fraction (for one
        site and layer, or the largest |restored| over layers, sites and heads). Works
        offline (the bundled script is embedded)."""
        import circuitsvis as cv

        toks = list(self.meta["tokens_a"])
        vals = np.zeros(len(toks))
        sub = self.df if site is None else self.df[self.df.site == site]
        if layer is not None:
            sub = sub[sub.layer == layer]
        if len(sub):
            g = sub.groupby("position")["restored"].agg(lambda s: s.loc[s.abs().idxmax()])
            for p, v in g.items():
                vals[int(p)] = float(v) if np.isfinite(v) else 0.0
        lim = float(np.abs(vals).max()) or 1.0
        rendered = cv.tokens.colored_tokens(tokens=toks, values=vals.tolist(), min_value=-lim, max_value=lim)
        return _OfflineHTML(rendered)


class _OfflineHTML:
    """circuitsvis output whose notebook display never touches the network."""

    def __init__(self, rendered):
        self.rendered = rendered

    def _repr_html_(self) -> str:
        return self.rendered.local_src

    def __str__(self) -> str:
        return self.rendered.local_src

    def __repr__(self) -> str:
        return "<circuitsvis view: tokens coloured by restored fraction (display in a notebook)>"


# ---------------------------------------------------------------------------------
# attribution vs exact
# ---------------------------------------------------------------------------------
@register_result
@dataclass(repr=False)
class AttributionCheck(Result):
    """Attribution patching against exact patching on the same cells: ``df`` holds both
    per cell; ``meta['pearson']``, ``meta['spearman']`` (all cells) and per site."""

    title = "attribution vs exact patching"

    @property
    def pearson(self) -> float:
        return float(self.meta["pearson"])

    @property
    def spearman(self) -> float:
        return float(self.meta["spearman"])

    def summary(self) -> str:
        return (f"attribution vs exact over {len(self.df)} cells: Pearson {self.pearson:.3f}, "
                f"Spearman {self.spearman:.3f}")

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(4.6, 4.2))
        else:
            fig = ax.figure
        for s, sub in self.df.groupby("site", sort=False):
            ax.scatter(sub["exact"], sub["attribution"], s=10, label=s)
        lo = float(np.nanmin(self.df[["exact", "attribution"]].to_numpy()))
        hi = float(np.nanmax(self.df[["exact", "attribution"]].to_numpy()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
        ax.set_xlabel("exact restored fraction")
        ax.set_ylabel("attribution estimate")
        ax.set_title(self.summary(), fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), float("nan")
    pear = float(np.corrcoef(x, y)[0, 1])
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    spear = float(np.corrcoef(rx, ry)[0, 1])
    return pear, spear


