"""The synthetic lab (App. C.3, C.4): ``SyntheticDecoder``, a small untrained
Transformer with a choice of positional encoding, built as a TransformerLens
``HookedRootModule`` so every tl_glasses analyser runs on it; and the numerical
checks of the paper's theory in :mod:`tl_glasses.synthetic.theory`.

Names are imported on first use, so ``import tl_glasses.synthetic`` is cheap."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SyntheticDecoder": "._model",
    "SyntheticConfig": "._model",
    "CHAR_VOCAB": "._model",
    "PE_NAMES": "._pe",
    "alibi_bias": "._pe",
    "alibi_slopes": "._pe",
    "apply_rope": "._pe",
    "rope_cos_sin": "._pe",
    "sinusoidal_table": "._pe",
}

__all__ = sorted(_EXPORTS) + ["theory"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if name == "theory":
        return importlib.import_module(".theory", __name__)
    raise AttributeError(f"module 'tl_glasses.synthetic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
