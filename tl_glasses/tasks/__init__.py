"""Tasks: the paper's prompts, sequence families, tokenisation control, task suites.

Submodules: ``prompts`` (the paper's texts), ``tokenization`` (one token per item,
checked), ``families`` (sequence pairs for the collapse analysis), ``generators``
(copying/counting tasks), ``parsing``, ``scoring``, ``evaluate``. The names below are
imported on first use, so ``import tl_glasses.tasks`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> submodule that defines it (lazy)
# (``evaluate`` is also a submodule's name: use ``tl_glasses.evaluate`` for the function)
_LAZY = {
    "TaskResult": "evaluate",
    "tokenization_report": "evaluate",
    "get_task": "generators",
    "list_tasks": "generators",
    "Task": "generators",
    "TaskItem": "generators",
    "parse_answer": "parsing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
