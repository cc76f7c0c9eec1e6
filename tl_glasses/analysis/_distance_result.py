"""The :class:`~tl_glasses.results.Result` side of
:class:`~tl_glasses.analysis.collapse.LastTokenDistance`: its one-row ``df``, ``meta``,
``tensors`` (``y_a``/``y_b``), the rebuild that :meth:`Result.load` uses, a summary and
the per-layer plot. The measured fields, the noise-floor rule and the reported values
live in :mod:`tl_glasses.analysis._distance`."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import GlassesError
from ..results import Result

_TENSORS = ("y_a", "y_b")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _field_value(v: Any, typ: str) -> Any:
    """A value read back from a saved row, as the field of type ``typ`` holds it."""
    if hasattr(v, "item") and not isinstance(v, np.ndarray):
        v = v.item()
    typ = str(typ).replace(" ", "")
    if typ.startswith("list"):
        return [float(x) for x in (() if v is None else v)]
    optional = typ.endswith("|None")
    base = typ.removesuffix("|None")
    if optional and _missing(v):
        return None
    if base == "bool":
        return bool(v)
    if base == "int":
        return int(v)
    if base == "float":
        return float("nan") if v is None else float(v)
    if base == "str":
        return str(v)
    return v


class DistanceResult(Result):
    """``df``, ``meta`` and ``tensors`` computed from the dataclass fields (so a field
    set after construction, like a sweep's ``noise_batch_l2``, shows in all three)."""

    title = "last-token distance"

    @property
    def df(self) -> pd.DataFrame:
        """One row: :meth:`as_row` (measured numbers, floors and reported values)."""
        return pd.DataFrame([self.as_row()])

    @property
    def meta(self) -> dict[str, Any]:
        return dict(dtype=self.dtype, mode=self.mode, attn_impl=self.attn_impl,
                    n_tokens=[self.n_tokens_a, self.n_tokens_b], floor_factor=self.floor_factor)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in _TENSORS if getattr(self, k) is not None}

    @classmethod
    def from_frame(cls, df: pd.DataFrame, meta: dict[str, Any] | None = None,
                   tensors: dict[str, torch.Tensor] | None = None):
        """Rebuild from a saved one-row frame (and its tensors); the inverse of ``save``."""
        if len(df) != 1:
            raise GlassesError(f"a {cls.__name__} is one row, not {len(df)}")
        row = df.iloc[0].to_dict()
        kw = {f.name: _field_value(row[f.name], f.type) for f in dataclasses.fields(cls)
              if f.name in row and f.name not in _TENSORS}
        kw.update({k: v for k, v in (tensors or {}).items() if k in _TENSORS})
        return cls(**kw)

    def summary(self) -> str:
        mode = "" if self.mode == "native" else f" ({self.mode})"
        if self.below_floor:
            d = f"within the noise floor (L2 {self.l2_measured:.3g} <= {self.floor_factor:g} x {self.floor_l2:.3g})"
        else:
            d = f"L2 {self.l2_measured:.4g} (rel {self.rel_measured:.3g})"
        return (f"{self.dtype}{mode}, {self.n_tokens_a} vs {self.n_tokens_b} tokens: {d}; "
                f"bitwise_equal={self.bitwise_equal}, same_argmax={self.same_argmax}")

    def plot(self, ax=None):
        """Per-layer L2 distance of the last-token ``resid_post`` vs layer: the reported
        values (NaN within the floor: drawn as hollow markers at the measured value) and,
        dashed, ``floor_factor`` × the per-layer noise floor."""
        import matplotlib.pyplot as plt

        measured = np.asarray(self.per_layer_measured, dtype=float)
        if not len(measured):
            raise GlassesError("no per-layer distances: run last_token_distance with layers=True")
        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 3.6))
        x = np.arange(len(measured))
        rep = np.asarray(self.per_layer, dtype=float)
        ax.plot(x, rep, "o-", color="C0", label="L2 distance (reported)")
        within = np.isnan(rep) & np.isfinite(measured)
        if within.any():
            ax.plot(x[within], measured[within], "o", mfc="none", color="C0", label="within the noise floor")
        floor = np.asarray(self.per_layer_floor, dtype=float)
        if np.isfinite(floor).any():
            ax.plot(x, self.floor_factor * floor, "--", color="C3",
                    label=f"{self.floor_factor:g} × noise floor")
        if (measured[np.isfinite(measured)] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("layer (resid_post)")
        ax.set_ylabel("L2 distance, last token")
        ax.set_title(f"{self.dtype}: {self.n_tokens_a} vs {self.n_tokens_b} tokens", fontsize=9)
        ax.legend(fontsize=8)
        return ax.figure
