"""The results of the path analysers: :class:`PathResult` (the last row of the path
product, from :func:`~tl_glasses.analysis.paths.path_bound`) and :class:`DepthResult`
(the partial products against depth, from :func:`~tl_glasses.analysis.paths.depth_profile`),
with their summaries and plots.

Both are re-exported by :mod:`tl_glasses.analysis.paths`, where they always were.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..results import Result, register_result
from ._sensitivity_result import u_shape

__all__ = ["PathResult", "DepthResult"]


@register_result
@dataclass(repr=False)
class PathResult(Result):
    """The last row of the path product: one value per input position.

    ``values`` ``[n]``: ``B[n, i]``, the weighted count of causal paths i → n.
    ``df`` columns: ``position``, ``token_id``, ``token``, ``value``, ``share``
    (value over the row sum).
    """

    title = "path-product bound"

    @property
    def values(self) -> torch.Tensor:
        return self.tensors["values"]

    @property
    def tokens(self) -> torch.Tensor:
        return self.tensors["tokens"]

    def u_shape(self, positions=None) -> dict[str, float]:
        return u_shape(self.values, positions)

    def summary(self) -> str:
        v = self.values.double()
        share0 = float(v[0] / v.sum()) if v.sum() > 0 else float("nan")
        return (
            f"{self.meta.get('variant')} path product (heads={self.meta.get('heads')}), "
            f"{v.numel()} positions; first-token share {share0:.3g}, last-token share "
            f"{float(v[-1] / v.sum()):.3g}; {self.meta.get('banded_layers', 0)} banded layers"
        )

    def plot(self, ax=None, *, share: bool = True):
        """Path weight vs position, log axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 3.2))
        v = self.values.double()
        if share:
            v = v / v.sum()
        ax.plot(range(v.numel()), v.numpy(), lw=1.2, color="C1")
        ax.set_yscale("log")
        ax.set_xlabel("position i")
        ax.set_ylabel("paths i → n" + (" (share of row)" if share else ""))
        ax.set_title(
            f"{self.meta.get('model', '')}: {self.meta.get('variant')} (heads={self.meta.get('heads')})",
            fontsize=9,
        )
        return ax.figure


@register_result
@dataclass(repr=False)
class DepthResult(Result):
    """How the path product approaches the rank-one limit with depth (Prop. B.8).

    One row per layer ℓ (partial product ``P_ℓ = Ā^(ℓ)···Ā^(0)``, rows normalised):
    ``first_token_mass`` (last row's weight on position 0), ``dist_last``
    (``1 - first_token_mass``: total-variation distance of the last row from e_1),
    ``dist_inf`` (``‖P̂_ℓ - 1e_1ᵀ‖_∞ = 2·max_i(1 - P̂_ℓ[i,0])``), the layer's eigenvalues
    (its diagonal: ``lambda2`` = largest eigenvalue of Ā after the first, ``diag_mean``,
    ``unit_eigs`` = rows after the first with a single non-zero, which break Lemma B.6's
    condition), ``band`` (window width, n when dense).

    ``values``: first-token mass ``[L]``; tensors ``first_column`` ``[L, n]`` and
    ``eigenvalues`` ``[L, n]``.
    """

    title = "depth profile"

    @property
    def values(self) -> torch.Tensor:
        return self.tensors["values"]

    def summary(self) -> str:
        v = self.values
        return (
            f"{self.meta.get('variant')} partial products over {v.numel()} layers, n={self.meta.get('n_tokens')}: "
            f"last-row first-token mass {float(v[0]):.3g} after layer 0 → {float(v[-1]):.3g} after layer {v.numel() - 1}"
        )

    def plot(self, ax=None):
        """First-token mass of the last row and distance from the limit vs depth."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.2))
        df = self.df
        ax.plot(df["layer"], df["first_token_mass"], "o-", ms=3, label="first-token mass (last row)")
        ax.plot(df["layer"], df["dist_inf"] / 2, "s--", ms=3, label="max_i (1 - P̂[i,0])")
        ax.set_xlabel("layer ℓ (partial product Ā^(ℓ)···Ā^(0))")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.set_title(f"{self.meta.get('model', '')}: depth limit ({self.meta.get('variant')})", fontsize=9)
        return ax.figure
