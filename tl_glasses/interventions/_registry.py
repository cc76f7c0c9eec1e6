"""Mitigations by name, and the compact spec strings the CLI uses.

    separators            separators(every=3, sep=",")
    separators:4          separators(every=4)
    separators:3:;        separators(every=3, sep=";")
    sliding_window:64     sliding_window(window=64) on every layer
    sliding_window:64@0-5,9
    global_attention      every native local layer made global
    global_attention@0-4
    prompt_structure:question_first | question_last | sequence_first
    a+b                   both at once
"""
from __future__ import annotations

from .._vocab import parse_layer_spec
from ..errors import GlassesError, UnknownNameError
from ._base import Compose, Mitigation
from .attention import global_attention, sliding_window
from .prompting import prompt_structure, separators

__all__ = ["MITIGATIONS", "list_mitigations", "mitigations", "parse_mitigation", "register_mitigation"]

MITIGATIONS = {
    "separators": separators,
    "sliding_window": sliding_window,
    "global_attention": global_attention,
    "prompt_structure": prompt_structure,
}


def mitigations() -> list[str]:
    """Names of the registered mitigations (a table: :func:`list_mitigations`)."""
    return sorted(MITIGATIONS)


_SPECS = {
    "separators": "separators[:K[:SEP]]",
    "sliding_window": "sliding_window:W[@LAYERS]",
    "global_attention": "global_attention[@LAYERS]",
    "prompt_structure": "prompt_structure:question_first|question_last|sequence_first",
}


def register_mitigation(name: str, factory, *, spec: str | None = None, overwrite: bool = False) -> None:
    """Register a mitigation factory (keyword arguments -> :class:`Mitigation`) under
    ``name``, usable as ``name[:ARG...]`` in spec strings once :func:`parse_mitigation`
    knows how to read its arguments (without them, ``name`` alone). Refuses a name
    already registered unless ``overwrite=True``."""
    if name in MITIGATIONS and not overwrite:
        raise GlassesError(f"a mitigation named {name!r} is already registered; pass overwrite=True")
    if not callable(factory):
        raise GlassesError(f"a mitigation factory is callable; got {type(factory).__name__}")
    MITIGATIONS[name] = factory
    _SPECS[name] = spec or name


def list_mitigations():
    """A table of the registered mitigations: name, description (the factory's first
    docstring line) and the CLI spec string."""
    import pandas as pd

    rows = [dict(name=n, description=(MITIGATIONS[n].__doc__ or "").strip().splitlines()[0] if MITIGATIONS[n].__doc__
                 else "", spec=_SPECS.get(n, n)) for n in mitigations()]
    return pd.DataFrame(rows, columns=["name", "description", "spec"])


def _layers(text: str) -> list[int]:
    return parse_layer_spec(text) or []


def _one(spec: str) -> Mitigation:
    spec = spec.strip()
    layers = None
    if "@" in spec:
        spec, lay = spec.split("@", 1)
        layers = _layers(lay)
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in MITIGATIONS:
        raise UnknownNameError("mitigation", name, mitigations())
    args = rest.split(":", 1) if rest else []
    try:
        if name == "separators":
            if layers is not None:
                raise GlassesError("separators edit the prompt; they take no @layers")
            every = int(args[0]) if args and args[0] else 3
            return separators(every, args[1] if len(args) > 1 else ",")
        if name == "sliding_window":
            if not args or not args[0]:
                raise GlassesError("sliding_window needs a window: sliding_window:64")
            return sliding_window(int(args[0]), layers)
        if name == "global_attention":
            if args:
                raise GlassesError("global_attention takes only @layers: global_attention@0-4")
            return global_attention(layers)
        if name == "prompt_structure":
            return prompt_structure(args[0] if args else "question_first")
    except ValueError as exc:
        if isinstance(exc, GlassesError):
            raise
        raise GlassesError(f"cannot read the mitigation {spec!r}: {exc}") from None
    raise AssertionError(name)


def parse_mitigation(spec: str) -> Mitigation | None:
    """A mitigation from a spec string (see the module docstring); "none" -> None."""
    if spec is None or spec.strip().lower() in ("", "none", "baseline"):
        return None
    parts = [_one(p) for p in spec.split("+")]
    return parts[0] if len(parts) == 1 else Compose(tuple(parts))
