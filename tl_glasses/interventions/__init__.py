"""Interventions: mitigations of representational collapse as small values.

Each produces forward hooks ``[(hook_name, fn), ...]``, a prompt transform, and/or a
temporary model patch (see :class:`Mitigation`); all compose with your own hooks::

    m = tg.sliding_window(window=64, layers=[0, 1])
    with m.applied(model, fwd_hooks=my_hooks):
        model(tokens)
"""
from ._base import Compose, Mitigation, as_mitigation, parse_layers
from ._registry import list_mitigations, mitigations, parse_mitigation, register_mitigation
from .attention import (
    GlobalAttention,
    SlidingWindow,
    global_attention,
    native_local_layers,
    sliding_window,
    sliding_window_mask,
)
from .prompting import PromptStructure, Separators, prompt_structure, separators

__all__ = [
    "Mitigation", "Compose", "as_mitigation", "parse_layers", "mitigations", "parse_mitigation",
    "list_mitigations", "register_mitigation",
    "SlidingWindow", "GlobalAttention", "Separators", "PromptStructure",
    "separators", "sliding_window", "global_attention", "prompt_structure",
    "native_local_layers", "sliding_window_mask",
]
