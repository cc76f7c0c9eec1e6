"""Helpers shared by the theory checks (:mod:`tl_glasses.synthetic.theory`): dtype
names, power-of-two lengths and a small memo of models and sequences shared by many rows
(rows are written to disk by :func:`tl_glasses.sweeps.run_rows`)."""
from __future__ import annotations

import torch

from .._vocab import dtype_name, parse_dtype
from ..errors import UnknownNameError


_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(d: torch.dtype | str) -> torch.dtype:
    """One of the four dtypes the theory checks run in (any name :func:`parse_dtype` reads)."""
    out = parse_dtype(d)
    if out not in _DTYPES.values():
        raise UnknownNameError("dtype", d, list(_DTYPES))
    return out


_dname = dtype_name


def _pow2(lo: int, hi: int) -> list[int]:
    return [2**k for k in range(lo, hi + 1)]


class _Memo(dict):
    """Build-once values keyed by a tuple (models and sequences shared by many rows);
    keeps the ``size`` most recent."""

    def __init__(self, size: int | None = None):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key not in self:
            if self.size is not None and len(self) >= self.size:
                del self[next(iter(self))]
            self[key] = make()
        return self[key]
