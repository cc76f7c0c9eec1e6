"""The capture engine: every hooked forward tl_glasses runs goes through :func:`capturing`
(or :func:`run`, the same with the block closed at once).

One call owns: the tokens in; the hooks that *read* (copies of chosen positions, or a
function of the activation) and those that *write* (the mitigation's, then the user's
own, then the caller's edits); stopping the forward after the last read; how many
positions of logits are computed (``logits_to_keep``); the attention kernel (eager
when a pattern or score hook is hooked, the fused kernel otherwise, unless forced);
gradients with respect to hooks (``grad_wrt``); and removing every hook it added, on
every path. The model side is a :class:`~tl_glasses.capture.Backend`.

Order at one hook point: the mitigation's hooks, then ``write`` (the user's hooks, the
analyser's edits), then ``grad_wrt``, then the reads; a read therefore sees the value
after every edit made at that hook point.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch

from ..errors import GlassesError, HookError
from ._backend import Backend, HookSpec, backend_for

__all__ = ["Read", "CaptureOut", "run", "capturing", "forward", "cache"]


class _StopForward(Exception):
    """Raised from the engine's own read hook once every read has fired; caught by the
    engine around the forward it started, so it never reaches a caller."""


@dataclass(frozen=True)
class Read:
    """What to keep of one hook's activation.

    ``at``: ``None`` (the whole activation), an int or a 1-D LongTensor of positions
    (``t[:, at]``: every batch row), or a list of ``(row, position)`` pairs
    (``t[rows, positions]``). ``fn``: instead, keep ``fn(t)`` (anything). ``graph``:
    keep the autograd graph (no detach/copy) for a backward pass afterwards.
    """

    at: Union[None, int, torch.Tensor, Sequence[tuple[int, int]]] = None
    fn: Callable[[torch.Tensor], Any] | None = None
    graph: bool = False

    def take(self, t: torch.Tensor) -> Any:
        if self.fn is not None:
            return self.fn(t)
        at = self.at
        if at is None:
            v = t
        elif isinstance(at, int):
            v = t[:, at]
        elif isinstance(at, torch.Tensor):
            v = t[:, at.to(t.device)]
        else:
            rows = torch.tensor([r for r, _ in at], device=t.device)
            pos = torch.tensor([p for _, p in at], device=t.device)
            v = t[rows, pos]
        return v if self.graph else v.detach().clone()


ReadSpec = Union[None, Read, int, torch.Tensor, Sequence[tuple[int, int]], Callable]


def _as_read(spec: ReadSpec) -> Read:
    if isinstance(spec, Read):
        return spec
    if callable(spec) and not isinstance(spec, torch.Tensor):
        return Read(fn=spec)
    if spec is None or isinstance(spec, (int, torch.Tensor)):
        return Read(at=spec)
    return Read(at=list(spec))


@dataclass
class CaptureOut:
    """What one run gave: ``acts`` (read hook name → what was kept; only hooks that
    fired), ``wrt`` (``grad_wrt`` name → the activation, the first to fire a leaf),
    ``logits`` (when asked), ``attn_impl`` (the kernel used), ``stopped`` (the forward
    ended after the last read)."""

    acts: dict[str, Any] = field(default_factory=dict)
    wrt: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: Any = None
    attn_impl: str = "eager"
    stopped: bool = False
    leaf: torch.Tensor | None = None

    def missing(self, names: Sequence[str]) -> list[str]:
        """The names among ``names`` whose read hook did not fire."""
        return [n for n in names if n not in self.acts]


def _grad_wrt_hook(out: CaptureOut, name: str, purpose: str):
    def hook(t, hook):
        if name in out.wrt:
            raise HookError(f"hook {name!r} fired twice in one forward; {purpose} needs a hook that fires once")
        if not isinstance(t, torch.Tensor) or t.ndim < 3 or not t.is_floating_point():
            raise HookError(
                f"wrt hook {name!r} gives {type(t).__name__} "
                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else ''}; {purpose} needs an activation "
                f"shaped [batch, pos, ...] such as blocks.L.hook_resid_pre"
            )
        if out.leaf is None:  # the first to fire becomes the leaf: nothing upstream is recorded
            x = t.detach().clone().requires_grad_(True)
            out.leaf = x
            out.wrt[name] = x
            return x
        out.wrt[name] = t
        return t

    return hook


def _read_hook(out: CaptureOut, name: str, read: Read, names: frozenset, stop: bool):
    def hook(t, hook):
        out.acts[name] = read.take(t)
        if stop and names.issubset(out.acts.keys()):
            out.stopped = True
            raise _StopForward  # every read is in: the rest of the forward is not needed
        return None

    return hook


@contextmanager
def capturing(
    model,
    tokens: torch.Tensor,
    *,
    read: Mapping[str, ReadSpec] | Sequence[str] = (),
    write: Sequence[HookSpec] = (),
    bwd: Sequence[HookSpec] = (),
    mitigation=None,
    logits: bool | int = False,
    stop: bool = False,
    grad_wrt: Sequence[str] = (),
    grad: bool | None = None,
    attn_impl: str = "auto",
    position_ids: torch.Tensor | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    backend: Backend | None = None,
    purpose: str = "this analysis",
    check: bool = True,
    kernel: str | None = None,
) -> Iterator[CaptureOut]:
    """One hooked forward; the block stays open (hooks attached, kernel switched, the
    mitigation's patch applied, gradients enabled when asked) until it exits, so a
    backward pass can run inside it. Everything added is removed on exit, errors included.

    Args:
        read: hook name → :class:`Read` (or what :class:`Read` takes: positions, pairs,
            a callable), or a list of names (whole activations).
        write: ``(name or filter, fn)`` forward hooks that may edit (the user's own,
            an analyser's patches); run after the mitigation's hooks, before the reads.
        bwd: backward hooks, passed through.
        mitigation: a :class:`~tl_glasses.interventions.Mitigation`: its patch and hooks.
        logits: False (none: the forward computes the last position's only, where the
            model allows), True (every position), or k (the last k positions).
        stop: end the forward once every read has fired (no logits then).
        grad_wrt: hook names to differentiate with respect to: the first to fire is
            replaced by a leaf tensor, the others keep their graph (``out.wrt``).
        grad: run with autograd on (default: on when ``grad_wrt`` is given).
        attn_impl: ``"auto"``, ``"eager"`` or ``"sdpa"`` (checked against the hooks).
        kernel: use exactly this kernel, unchecked (the fast-path self-checks only).
    """
    be = backend or backend_for(model)
    reads = {n: Read() for n in read} if not isinstance(read, Mapping) else {n: _as_read(s) for n, s in read.items()}
    if stop and logits not in (False, None):
        raise GlassesError("stop=True ends the forward before the logits; ask for one or the other")
    if isinstance(tokens, str):
        from .._core import as_tokens

        tokens = as_tokens(model, tokens)
    mit_hooks = list(mitigation.hooks(model)) if mitigation is not None else []
    wrt = list(grad_wrt)
    named = list(reads) + wrt
    if check and named:
        be.check(model, named, purpose)
    be.prepare(model, named + [n for n, _ in list(write) + mit_hooks if isinstance(n, str)])
    if kernel is None:
        kernel = be.choose_attention(
            model, attn_impl, [n for n, _ in mit_hooks] + [n for n, _ in write] + named,
            bool(mitigation is not None and getattr(mitigation, "needs_eager", False)),
        )
    out = CaptureOut(attn_impl=kernel)
    names = frozenset(reads)
    fwd = mit_hooks + list(write)
    fwd += [(n, _grad_wrt_hook(out, n, purpose)) for n in wrt]
    fwd += [(n, _read_hook(out, n, r, names, stop and bool(names))) for n, r in reads.items()]
    use_grad = bool(wrt) if grad is None else bool(grad)
    with ExitStack() as stack:
        if mitigation is not None:
            stack.enter_context(mitigation.patch(model))
        stack.enter_context(be.attention(model, kernel))
        stack.enter_context(torch.enable_grad() if use_grad else torch.no_grad())
        stack.enter_context(be.hooks(model, fwd, list(bwd)))
        try:
            out.logits = be.forward(model, tokens, logits=logits, position_ids=position_ids,
                                    kwargs=dict(forward_kwargs or {}))
        except _StopForward:
            pass
        yield out


def run(model, tokens: torch.Tensor, **kw: Any) -> CaptureOut:
    """:func:`capturing` closed at once: one hooked forward, every hook removed after."""
    with capturing(model, tokens, **kw) as out:
        return out


def forward(model, tokens: torch.Tensor, keep=None, *, fallback: bool = True, **kw: Any) -> Any:
    """A bare forward (no hooks) that computes logits at the kept positions only:
    ``keep`` is None (every position), an int n (the last n) or a 1-D index tensor,
    through ``logits_to_keep`` where the model takes it; otherwise (``TypeError``) the
    full logits are sliced, or, with ``fallback=False``, the ``TypeError`` is raised."""
    if keep is None:
        return model(tokens, **kw)
    try:
        return model(tokens, logits_to_keep=keep, **kw)
    except TypeError:
        if not fallback:
            raise
        full = model(tokens, **kw)
        return full[:, -keep:] if isinstance(keep, int) else full[:, keep.to(full.device)]


def cache(model, tokens: torch.Tensor, names: Sequence[str], *, fwd_hooks: Sequence[HookSpec] = (),
          backend: Backend | None = None, purpose: str = "this analysis") -> Any:
    """The backend's own activation cache (TransformerLens: an ``ActivationCache``) of
    ``names`` from one no-grad forward, after ``fwd_hooks``; hooks removed after."""
    be = backend or backend_for(model)
    be.check(model, list(names), purpose)
    be.prepare(model, list(names))
    return be.cache(model, tokens, names, list(fwd_hooks))
