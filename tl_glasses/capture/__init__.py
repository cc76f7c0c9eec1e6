"""One capture engine: every hooked forward in tl_glasses goes through here.

* :func:`run` — one hooked forward (reads, writes, mitigation, stop, logits, kernel),
  returning a :class:`CaptureOut`;
* :func:`capturing` — the same as a context manager, kept open for a backward pass;
* :func:`forward` — a bare forward with ``logits_to_keep``;
* :class:`Backend`, :class:`TransformerLensBackend`, :func:`backend_for`,
  :func:`register_backend` — the model side, so another engine can be added without
  touching the analysers.

See docs/capture.md.
"""
from __future__ import annotations

from ._backend import (
    Backend,
    TransformerLensBackend,
    backend_for,
    hooks_context,
    register_backend,
    unregister_backend,
)
from ._engine import CaptureOut, Read, cache, capturing, forward, run

__all__ = [
    "run",
    "capturing",
    "forward",
    "cache",
    "Read",
    "CaptureOut",
    "Backend",
    "TransformerLensBackend",
    "backend_for",
    "register_backend",
    "unregister_backend",
    "hooks_context",
]
