"""The one exception our own hooks raise to end a forward early.

A hook that has captured the last thing an analyser needs (the final norm output for
patching, the last attention pattern for path products, the target activation for
sensitivity) raises :class:`_StopForward`; the analyser's own ``try`` around the
forward catches it, so it never escapes to the caller. Each raise is caught by the
function that installed the hook, around the forward it started.
"""
from __future__ import annotations


class _StopForward(Exception):
    """Raised from one of our hooks to skip the rest of the forward (never escapes)."""
