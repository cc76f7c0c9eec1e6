"""The same model in another dtype, for native low-precision runs."""
from __future__ import annotations

import copy

import torch

from .._core import model_dtype

__all__ = ["model_for_dtype"]


def model_for_dtype(model, dtype: torch.dtype | str):
    """The same model in ``dtype`` (a real cast, for native low-precision runs).

    Embedded models are reloaded in that dtype (as transformers would run them);
    other models are deep-copied and cast, rotary frequency buffers kept exact. The
    model given is never modified.
    """
    from . import load_model, model_info, resolve_dtype

    dtype = resolve_dtype(dtype)
    if model_dtype(model) == dtype:
        return model
    info = model_info(model)
    if info.get("source") == "embedded" and info.get("name"):
        return load_model(info["name"], dtype=dtype, device=str(next(model.parameters()).device))
    clone = copy.deepcopy(model)
    keep = {n: b.detach().clone() for n, b in clone.named_buffers() if "inv_freq" in n}
    clone = clone.to(dtype)
    for n, b in clone.named_buffers():
        if n in keep:
            b.data = keep[n]
    clone.eval()
    info = dict(info)
    info["dtype"] = str(dtype)
    clone.__dict__["tl_glasses_info"] = info
    return clone
