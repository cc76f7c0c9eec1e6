"""analysis: the analysers (collapse, sensitivity, path products, over-squashing studies,
patching). Submodules are imported on first access, so ``tg.analysis.collapse.noise_floor``
works in a fresh session."""
from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("collapse", "sensitivity", "paths", "oversquashing", "patching")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_SUBMODULES)
