"""The capture engine's backend: the one place that knows how a model attaches hooks,
runs a forward and switches its attention kernel.

:class:`Backend` is the interface; :class:`TransformerLensBackend` implements it for
every model with TransformerLens' hook interface (a ``TransformerBridge``, a
TransformerLens 3.x ``HookedTransformer``, the synthetic lab model), through
:mod:`tl_glasses.compat` where the two families differ. Another engine (nnsight, a
plain ``torch`` model with forward hooks…) is one more class registered with
:func:`register_backend`; no analyser changes.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence, runtime_checkable

import torch

from ..errors import GlassesError

__all__ = ["Backend", "TransformerLensBackend", "backend_for", "register_backend", "hooks_context"]

HookSpec = tuple[Any, Callable]  # (hook name or name filter, fn(activation, hook))


@runtime_checkable
class Backend(Protocol):
    """What the capture engine needs from a model family."""

    name: str

    def claims(self, model: Any) -> bool:
        """Whether this backend runs ``model``."""

    def check(self, model: Any, names: Sequence[str], purpose: str) -> None:
        """Raise a :class:`~tl_glasses.errors.HookError` naming hook points ``model``
        lacks; never changes the model."""

    def prepare(self, model: Any, names: Sequence[str]) -> None:
        """Make ``names`` hookable right before a run (may add an adapter hook point)."""

    def hooks(self, model: Any, fwd: Sequence[HookSpec], bwd: Sequence[HookSpec]) -> ContextManager:
        """Attach the hooks for the block; remove exactly these on every exit path."""

    def attention(self, model: Any, kernel: str) -> ContextManager:
        """Run attention with ``kernel`` (``"eager"`` or ``"sdpa"``) within the block."""

    def choose_attention(self, model: Any, requested: str, names: Sequence[Any], eager_needed: bool) -> str:
        """The kernel for a run that hooks ``names``: ``"eager"`` or ``"sdpa"``."""

    def supports_logits_to_keep(self, model: Any) -> bool:
        """Whether the forward computes logits at the last positions only on request."""

    def forward(self, model: Any, tokens: torch.Tensor, *, logits: bool | int,
                position_ids: torch.Tensor | None, kwargs: dict) -> Any:
        """One forward; the logits (all positions, or the last ``logits`` of them) or None."""

    def cache(self, model: Any, tokens: torch.Tensor, names: Sequence[str], fwd: Sequence[HookSpec]) -> Any:
        """The model family's own activation cache of ``names`` (after ``fwd`` hooks)."""


@contextmanager
def hooks_context(model, fwd_hooks: Sequence[HookSpec] = (), bwd_hooks: Sequence[HookSpec] = ()) -> Iterator[Any]:
    """``model.hooks(...)`` with the guarantee tl_glasses relies on: exactly the hooks
    added here are removed on exit, whatever happens inside (errors included), and the
    user's own hooks are never touched."""
    with model.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks)):
        yield model


class TransformerLensBackend:
    """TransformerLens models: ``TransformerBridge`` (4.x) and ``HookedTransformer``
    (3.x, adapted through :mod:`tl_glasses.compat`), and anything else with
    ``hook_dict`` and ``hooks(fwd_hooks=, bwd_hooks=)``."""

    name = "transformer_lens"

    def claims(self, model: Any) -> bool:
        try:
            return hasattr(model, "hook_dict") and callable(getattr(model, "hooks", None))
        except Exception:  # noqa: BLE001 - TransformerLens 4 raises on removed names
            return False

    def check(self, model: Any, names: Sequence[str], purpose: str) -> None:
        from .._core import check_hooks

        check_hooks(model, [n for n in names if isinstance(n, str)], purpose=purpose)

    def prepare(self, model: Any, names: Sequence[str]) -> None:
        from .._vocab import FINAL

        if FINAL in names and FINAL not in model.hook_dict:
            from ..compat import _legacy_final_norm, as_glasses_model

            if _legacy_final_norm(model) is not None:
                as_glasses_model(model)  # a HookedTransformer gains ln_final.hook_out (compat)

    def hooks(self, model: Any, fwd: Sequence[HookSpec], bwd: Sequence[HookSpec]) -> ContextManager:
        return hooks_context(model, fwd, bwd)

    def attention(self, model: Any, kernel: str) -> ContextManager:
        if kernel == "sdpa":
            from ..analysis._fused import fused_attention

            return fused_attention(model)
        return _nothing()

    def choose_attention(self, model: Any, requested: str, names: Sequence[Any], eager_needed: bool) -> str:
        from ..analysis._probe import resolve_attn_impl

        return resolve_attn_impl(model, requested, names, eager_needed=eager_needed)

    def supports_logits_to_keep(self, model: Any) -> bool:
        hf = getattr(model, "original_model", None)
        if hf is None:
            return False
        try:
            return "logits_to_keep" in inspect.signature(hf.forward).parameters
        except (TypeError, ValueError):
            return False

    def forward(self, model: Any, tokens: torch.Tensor, *, logits: bool | int,
                position_ids: torch.Tensor | None, kwargs: dict) -> Any:
        kw = dict(kwargs)
        if position_ids is not None:
            kw["position_ids"] = position_ids
        keep = self.supports_logits_to_keep(model)
        if logits is False or logits is None:
            if keep:  # the unembedding of the last position only (it can dominate a forward)
                kw["logits_to_keep"] = 1
            model(tokens, return_type=None, **kw)
            return None
        if logits is True:
            return model(tokens, return_type="logits", **kw)
        k = int(logits)
        if keep:
            return model(tokens, return_type="logits", logits_to_keep=k, **kw)
        return model(tokens, return_type="logits", **kw)[:, -k:]

    def cache(self, model: Any, tokens: torch.Tensor, names: Sequence[str], fwd: Sequence[HookSpec]) -> Any:
        with torch.no_grad(), hooks_context(model, fwd):
            _, c = model.run_with_cache(tokens, names_filter=list(names), return_type=None)
        return c


@contextmanager
def _nothing() -> Iterator[None]:
    yield


_BACKENDS: list[Backend] = []


def register_backend(backend: Backend, *, first: bool = True) -> Backend:
    """Add a backend; ``first`` (default) tries it before the ones already known.
    Registering the same object twice is refused."""
    if not isinstance(backend, Backend):
        raise GlassesError(f"{type(backend).__name__} does not implement the capture Backend interface")
    if any(b is backend for b in _BACKENDS):
        raise GlassesError(f"backend {getattr(backend, 'name', backend)!r} is already registered")
    _BACKENDS.insert(0 if first else len(_BACKENDS), backend)
    return backend


def unregister_backend(backend: Backend) -> None:
    """Remove a backend added with :func:`register_backend` (tests, plugins)."""
    _BACKENDS[:] = [b for b in _BACKENDS if b is not backend]


def backend_for(model: Any) -> Backend:
    """The first registered backend that claims ``model``."""
    for b in _BACKENDS:
        if b.claims(model):
            return b
    raise GlassesError(
        f"no capture backend runs a {type(model).__name__}; pass a TransformerLens model "
        f"(tl_glasses.load_model, tl_glasses.wrap_model) or register a backend "
        f"(tl_glasses.capture.register_backend)"
    )


register_backend(TransformerLensBackend())
