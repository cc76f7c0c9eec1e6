"""The result of :func:`~tl_glasses.analysis.sensitivity.sensitivity`:
:class:`SensitivityResult` (values, table, U-shape summary, plot) and the helpers it
and the path analysers share (:func:`u_shape`, :func:`token_strings`).

Everything here is re-exported by :mod:`tl_glasses.analysis.sensitivity`, where it
always was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from ..errors import GlassesError
from ..results import Result, register_result

__all__ = ["SensitivityResult", "u_shape", "token_strings"]


def _regions(n: int) -> dict[str, slice]:
    k = max(1, n // 10)
    mid0 = max(0, (n - k) // 2)
    return {"start": slice(0, k), "middle": slice(mid0, mid0 + k), "end": slice(n - k, n)}


def u_shape(values: torch.Tensor, positions: Sequence[int] | slice | None = None) -> dict[str, float]:
    """Mean of ``values`` over the first, middle and last tenth of ``positions``
    (default: all positions), and the ratios start/middle and end/middle.

    A U-shape (paper Sec. 5, "U-shape effect") shows as both ratios > 1.
    """
    v = values.detach().double().cpu().flatten()
    if positions is not None:
        v = v[positions] if isinstance(positions, slice) else v[torch.as_tensor(list(positions))]
    n = v.numel()
    if n < 3:
        raise GlassesError(f"a U-shape summary needs at least 3 positions, got {n}")
    out = {name: float(v[s].mean()) for name, s in _regions(n).items()}
    mid = out["middle"]
    out["start/middle"] = out["start"] / mid if mid > 0 else math.inf
    out["end/middle"] = out["end"] / mid if mid > 0 else math.inf
    return out


from .._vocab import token_strings  # noqa: E402


@register_result
@dataclass(repr=False)
class SensitivityResult(Result):
    """Per-position sensitivity of the last token (one row per wrt hook and position).

    ``values``: ``[n]`` for one ``wrt`` hook, ``[layers, n]`` for a list or "all".
    ``df`` columns: ``wrt``, ``layer`` (index in the wrt list), ``position``,
    ``token_id``, ``token``, ``value`` (‖∂y_n/∂h_i‖), ``value_sq`` (its square),
    ``stderr``/``stderr_sq`` (Hutchinson only; NaN otherwise), ``share`` (value_sq
    over the sum of value_sq over positions, per wrt hook).
    """

    title = "over-squashing sensitivity"

    @property
    def values(self) -> torch.Tensor:
        v = self.tensors["values"]
        return v[0] if self.meta.get("single_wrt", True) and v.shape[0] == 1 else v

    @property
    def values_sq(self) -> torch.Tensor:
        v = self.tensors["values_sq"]
        return v[0] if self.meta.get("single_wrt", True) and v.shape[0] == 1 else v

    @property
    def stderr_sq(self) -> torch.Tensor | None:
        v = self.tensors.get("stderr_sq")
        if v is None:
            return None
        return v[0] if self.meta.get("single_wrt", True) and v.shape[0] == 1 else v

    @property
    def tokens(self) -> torch.Tensor:
        return self.tensors["tokens"]

    @property
    def wrt(self) -> list[str]:
        return list(self.meta.get("wrt", []))

    def u_shape(self, positions: Sequence[int] | slice | None = None) -> pd.DataFrame:
        """Start/middle/end-tenth means per wrt hook (see :func:`u_shape`)."""
        vals = self.tensors["values"]
        rows = [dict(wrt=w, **u_shape(vals[k], positions)) for k, w in enumerate(self.wrt)]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        vals = self.tensors["values"]
        n = vals.shape[-1]
        u = u_shape(vals[0]) if n >= 3 else None
        head = (
            f"{self.meta.get('method')} sensitivity of {self.meta.get('target')}[{self.meta.get('target_pos')}] "
            f"w.r.t. {self.wrt[0] if len(self.wrt) == 1 else f'{len(self.wrt)} hooks'}, {n} positions"
        )
        if u:
            head += (
                f"; mean by tenth start {u['start']:.3g} / middle {u['middle']:.3g} / end {u['end']:.3g}"
            )
        return head

    def plot(self, ax=None, *, normalise: bool = False, layers: Sequence[int] | None = None):
        """Sensitivity vs position on a log axis (one line per wrt hook)."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 3.2))
        vals = self.tensors["values"].double()
        idx = list(range(vals.shape[0])) if layers is None else list(layers)
        cmap = plt.get_cmap("viridis")
        for j, k in enumerate(idx):
            v = vals[k]
            if normalise:
                v = v / v.sum()
            color = cmap(j / max(1, len(idx) - 1)) if len(idx) > 1 else "C0"
            ax.plot(range(v.numel()), v.numpy(), lw=1.2, color=color, label=self.wrt[k])
        ax.set_yscale("log")
        ax.set_xlabel("position i")
        ylabel = "‖∂y_n/∂h_i‖" + (" (share)" if normalise else "")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{self.meta.get('model', '')}: {self.meta.get('method')} sensitivity", fontsize=9)
        if 1 < len(idx) <= 8:
            ax.legend(fontsize=6)
        return ax.figure


from .._vocab import model_name as _model_name  # noqa: E402


def _frame(model, tokens, wrt_names, tensors) -> pd.DataFrame:
    n = tokens.shape[-1]
    ids = tokens[0].tolist()
    strs = token_strings(model, tokens)
    vals, sq = tensors["values"].double(), tensors["values_sq"]
    se_sq = tensors.get("stderr_sq")
    frames = []
    for k, w in enumerate(wrt_names):
        total = float(sq[k].sum())
        s = sq[k].double()
        se = se_sq[k].double() if se_sq is not None else None
        # delta method: se(sqrt(x)) = se(x) / (2 sqrt(x))
        se_norm = (se / (2 * s.clamp_min(1e-300).sqrt())) if se is not None else None
        frames.append(pd.DataFrame({
            "wrt": w,
            "layer": k,
            "position": range(n),
            "token_id": ids,
            "token": strs,
            "value": vals[k].numpy(),
            "value_sq": s.numpy(),
            "stderr": se_norm.numpy() if se_norm is not None else float("nan"),
            "stderr_sq": se.numpy() if se is not None else float("nan"),
            "share": (s / total).numpy() if total > 0 else float("nan"),
        }))
    return pd.concat(frames, ignore_index=True)
