"""Over-squashing sensitivity: how much the last token's final representation
depends on the residual-stream input at every position (paper Sec. 5, Thm 5.1/B.5).

``s_i = ‖∂y_n / ∂h_i‖_F`` where ``y_n`` is the target activation at the last
position (default: the final norm's output, learned scale included, i.e. what the
unembedding reads) and ``h_i`` is the activation at the ``wrt`` hook at position
``i`` (default ``blocks.0.hook_resid_pre``: the embedding as the model scales it).

Three methods, all positions at once:

* ``"jacobian"``: the exact Frobenius norms, from ``D`` vector–Jacobian products
  (``D`` = size of the target vector) batched through one backward graph with
  ``torch.autograd.grad(..., is_grads_batched=True)``; cost ≈ ``D`` backward passes
  of compute, in chunks of many probes at a time (on a CPU the default chunk is capped,
  see ``CPU_JACOBIAN_BUDGET``; a chunk of 1 runs plain backward passes).
* ``"hutchinson"``: ``E_u ‖J_iᵀ u‖²`` over ``probes`` random Gaussian vectors ``u`` is
  an unbiased estimate of ``‖J_i‖²_F``; probes are batched; the standard error comes
  from the spread over probes.
* ``"scalar"``: the gradient of one scalar (an answer logit, a logit difference, a
  projection ``u·y_n``) with respect to every position: one backward pass.

Forward, metric and ``torch.autograd.grad`` run inside one hooks context: no hook
is left behind, parameter ``.grad`` is never touched, the model must be in eval mode.

Layout: this module is the analyser and what checks its arguments; the hooked forward
and the estimators are in :mod:`~tl_glasses.analysis._sensitivity_grad`, the result and
its plot in :mod:`~tl_glasses.analysis._sensitivity_result`. Every name is re-exported
here, where it always was.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence, Union

import torch

from .._core import (
    FINAL,
    as_tokens,
    check_hooks,
    model_device,
    model_dtype,
    n_layers,
    raise_if_nonfinite,
    require_eval,
    resid_name,
)
from ..capture import Read, capturing
from ..errors import GlassesError, HookError, UnknownNameError
# re-exported: every name importable from here before the split still is (importing this
# module also registers SensitivityResult, so results saved before the split still load)
from ._sensitivity_grad import (  # noqa: F401
    _grad,
    _hutchinson_sq,
    _jacobian_sq,
    _norms,
    _per_probe_norms,
)
from ._sensitivity_result import SensitivityResult, _frame, _model_name, _regions, token_strings, u_shape  # noqa: F401

__all__ = ["sensitivity", "SensitivityResult", "METHODS", "u_shape", "token_strings"]

METHODS = ("jacobian", "hutchinson", "scalar")
PROBE_DISTRIBUTIONS = ("gaussian", "rademacher")

Metric = Union[None, int, str, tuple, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


# --------------------------------------------------------------------------- non-finite values


class _NonFinite(Exception):
    """Raised inside the hooked forward; the search for the first bad hook runs outside it."""

    def __init__(self, what: str):
        self.what = what

    @staticmethod
    def check(t: torch.Tensor, what: str) -> None:
        if not torch.isfinite(t).all():
            raise _NonFinite(what)


# --------------------------------------------------------------------------- helpers


def _wrt_names(model, wrt) -> tuple[list[str], bool]:
    if isinstance(wrt, str) and wrt == "all":
        return [resid_name(layer) for layer in range(n_layers(model))], False
    if isinstance(wrt, (str, int)):
        items, single = [wrt], True
    elif isinstance(wrt, (list, tuple)) and wrt:
        items, single = list(wrt), False
    else:
        raise GlassesError(
            f"wrt must be a hook name, a layer index, a list of them, or 'all'; got {wrt!r}"
        )
    names = []
    for w in items:
        if isinstance(w, bool) or not isinstance(w, (str, int)):
            raise GlassesError(f"wrt entries are hook names or layer indices, not {w!r}")
        if isinstance(w, int):
            if not 0 <= w < n_layers(model):
                raise GlassesError(f"wrt layer {w} is out of range: the model has {n_layers(model)} layers")
            w = resid_name(w)
        names.append(w)
    if len(set(names)) != len(names):
        raise GlassesError(f"wrt lists a hook more than once: {names}")
    return names, single


def _target_name(model, target) -> str:
    if target == "final":
        return FINAL
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < n_layers(model):
            raise GlassesError(f"target layer {target} is out of range: the model has {n_layers(model)} layers")
        return resid_name(target, "post")
    if isinstance(target, str):
        return target
    raise GlassesError(f"target is 'final', a layer index or a hook name; got {target!r}")


def _token_id(model, t) -> int:
    if isinstance(t, int) and not isinstance(t, bool):
        vocab = getattr(model.cfg, "d_vocab", None)
        if vocab and not 0 <= t < vocab:
            raise GlassesError(f"token id {t} is outside the vocabulary [0, {vocab})")
        return t
    if isinstance(t, str):
        ids = model.to_tokens(t, prepend_bos=False).flatten().tolist()
        if len(ids) != 1:
            raise GlassesError(
                f"metric token {t!r} is {len(ids)} tokens for this tokenizer ({ids}); "
                f"pass a single-token string or the token id"
            )
        return ids[0]
    raise GlassesError(f"a metric token is an id or a single-token string, not {t!r}")


def _describe_metric(metric: Metric) -> str:
    if metric is None:
        return "top-1 logit"
    if isinstance(metric, torch.Tensor):
        return f"projection u·y (‖u‖={float(metric.norm()):.4g})"
    if isinstance(metric, tuple):
        return f"logit difference {metric[0]!r} - {metric[1]!r}"
    if isinstance(metric, (int, str)):
        return f"logit of {metric!r}"
    return getattr(metric, "__name__", repr(metric))


def _per_probe_bytes(model, n: int, n_wrt: int, width: int) -> int:
    cfg = model.cfg
    heads = int(getattr(cfg, "n_heads", 1) or 1)
    d = int(getattr(cfg, "d_model", width))
    d_mlp = int(getattr(cfg, "d_mlp", 4 * d) or 4 * d)
    item = torch.finfo(model_dtype(model)).bits // 8
    # transient gradients in one layer's backward + the gradients returned for every wrt hook
    return item * (3 * heads * n * n + 6 * n * d_mlp + 8 * n * d) + 8 * n_wrt * n * width


def _auto_chunk(model, n: int, n_wrt: int, width: int, total: int, budget: float) -> int:
    k = int(budget // max(1, _per_probe_bytes(model, n, n_wrt, width)))
    return max(1, min(total, k))


# On a CPU the exact Jacobian is compute-bound: d_model VJPs cost d_model backward passes
# of matrix products whichever way they are grouped, and large vmapped chunks are *slower*
# per probe than small ones (the batching copies and cat/mul of [k, heads, n, n] tensors
# fall out of cache; SmolLM2 at 256 tokens, one thread: 0.92 s per single VJP, 1.03 s per
# probe in chunks of 8, 1.63 s in chunks of 32). Chunks there are sized to this budget;
# on an accelerator the caller's memory budget is used as is.
CPU_JACOBIAN_BUDGET = 2.5e8


def _jacobian_chunk(model, n: int, n_wrt: int, width: int, total: int, budget: float) -> int:
    """Default probes per batched backward for ``method="jacobian"``."""
    if model_device(model).type == "cpu":
        budget = min(budget, CPU_JACOBIAN_BUDGET)
    return _auto_chunk(model, n, n_wrt, width, total, budget)


def _scalar_from_logits(model, metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    last = logits[0, -1]
    if metric is None:
        return last[int(last.detach().argmax())]
    if isinstance(metric, tuple):
        if len(metric) != 2:
            raise GlassesError(f"a logit-difference metric is a pair (token_a, token_b), got {metric!r}")
        a, b = (_token_id(model, t) for t in metric)
        return last[a] - last[b]
    if isinstance(metric, (int, str)):
        return last[_token_id(model, metric)]
    out = metric(last)
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        raise GlassesError(
            "a metric callable takes the last position's logits [d_vocab] and returns one scalar tensor; "
            f"it returned {type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
        )
    return out.reshape(())


def _target_read(name: str):
    def read(t):
        if not isinstance(t, torch.Tensor) or t.ndim < 3:
            raise HookError(f"target hook {name!r} must give [batch, pos, ...], got {type(t).__name__}")
        return t

    return read


# --------------------------------------------------------------------------- analyser


def sensitivity(
    model,
    prompt,
    *,
    wrt: Union[str, int, Sequence[Union[str, int]]] = "blocks.0.hook_resid_pre",
    target: Union[str, int] = "final",
    target_pos: int = -1,
    method: str = "jacobian",
    probes: int = 64,
    metric: Metric = None,
    seed: int = 0,
    probe_dist: str = "gaussian",
    chunk_size: int | None = None,
    memory_budget: float = 1.5e9,
    prepend_bos: bool | None = None,
    attn_impl: str = "auto",
) -> SensitivityResult:
    """Sensitivity of the target (default: final normalised representation of the
    last token) to the activation at ``wrt`` at every position.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer), in eval mode.
        prompt: a string (tokenised with ``model.to_tokens``) or token ids used as given.
        wrt: a hook name, a layer index (its ``blocks.L.hook_resid_pre``), a list of
            them, or ``"all"`` (every layer's resid_pre): ``values`` is then ``[layers, n]``.
        target: ``"final"`` (``ln_final.hook_out``), a layer index (its resid_post), or a hook name.
        target_pos: position of the target vector (default: the last).
        method: ``"jacobian"`` (exact ‖J_i‖_F), ``"hutchinson"`` (unbiased estimate of
            ‖J_i‖²_F from ``probes`` random probes, with standard error), ``"scalar"``
            (gradient norm of one scalar, one backward pass).
        probes: number of Hutchinson probes.
        metric: for ``method="scalar"``: ``None`` (the top-1 next-token logit), a token id
            or single-token string (its logit), a pair of them (logit difference), a tensor
            ``u`` shaped like the target vector (``u·y_n``), or a callable taking the last
            position's logits ``[d_vocab]`` and returning a scalar tensor.
        seed: seeds the Hutchinson probes (a private generator; global RNG untouched).
        probe_dist: ``"gaussian"`` (default) or ``"rademacher"`` probes.
        chunk_size: probes per batched backward; default from ``memory_budget`` (bytes).
        attn_impl: ``"auto"`` (default) runs the forward and the backward passes with
            PyTorch's fused ``sdpa`` attention when neither ``wrt`` nor ``target`` is a hook
            inside the attention re-implementation (patterns, scores) and the fused path
            reproduces eager on this model; ``"eager"`` forces the bridge's own attention.

    Returns:
        :class:`SensitivityResult` (``.values`` [n] or [layers, n], ``.df``, ``.plot()``).
    """
    if method not in METHODS:
        raise UnknownNameError("sensitivity method", method, METHODS)
    if probe_dist not in PROBE_DISTRIBUTIONS:
        raise UnknownNameError("probe distribution", probe_dist, PROBE_DISTRIBUTIONS)
    if method == "hutchinson" and (not isinstance(probes, int) or probes < 2):
        raise GlassesError(f"hutchinson needs at least 2 probes (for a standard error), got {probes!r}")
    if method != "scalar" and metric is not None:
        raise GlassesError(
            f"metric= applies to method='scalar' only; method={method!r} measures the whole target vector"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise GlassesError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    require_eval(model)
    tokens = as_tokens(model, prompt, prepend_bos=prepend_bos)
    n = tokens.shape[-1]
    if not -n <= target_pos < n:
        raise GlassesError(f"target_pos {target_pos} is outside the {n}-token sequence")
    tpos = target_pos % n
    wrt_names, single = _wrt_names(model, wrt)
    target_name = _target_name(model, target)
    if target_name in wrt_names:
        raise GlassesError(f"target {target_name!r} is also a wrt hook; pick an earlier wrt hook")
    vector_metric = isinstance(metric, torch.Tensor)
    need_logits = method == "scalar" and not vector_metric
    check_hooks(model, wrt_names + ([] if need_logits else [target_name]), purpose="sensitivity")
    from .._memory import guard as _memory_guard  # refuse before running what cannot fit

    _memory_guard(model, n, what=f"sensitivity(method={method!r})", grad=True,
                  logits="last" if need_logits else "none")

    reads = {} if need_logits else {target_name: Read(fn=_target_read(target_name), graph=True)}
    # the last position's logits only when the metric reads the last position
    want_logits: bool | int = (1 if tpos == n - 1 else True) if need_logits else False

    t0 = time.perf_counter()
    out: dict[str, torch.Tensor] = {}
    try:  # NaN/Inf: locate it after this block, once sensitivity's own hooks are gone
        # one forward through the capture engine (the first wrt hook becomes the leaf; it
        # stops after the target unless logits are needed); the block stays open for the
        # backward passes: the graph keeps references to the fused kernel's tensors
        with capturing(model, tokens, read=reads, grad_wrt=wrt_names, logits=want_logits,
                       stop=not need_logits, attn_impl=attn_impl, purpose="sensitivity", check=False) as cap:
            impl = cap.attn_impl
            logits = cap.logits
            missing = [w for w in wrt_names if w not in cap.wrt]
            if missing:
                raise HookError(
                    f"wrt hook(s) {missing} did not fire before the target {target_name!r}: the target "
                    f"cannot depend on them. Use a wrt hook earlier in the model than the target"
                )
            inputs = [cap.wrt[w] for w in wrt_names]
            for w, a in zip(wrt_names, inputs):
                if a.shape[1] != n:
                    raise HookError(
                        f"wrt hook {w!r} gives shape {tuple(a.shape)}; position must be dim 1 (n={n})"
                    )

            if need_logits:
                if not isinstance(logits, torch.Tensor):
                    raise GlassesError("the model returned no logits tensor; use a vector metric (a tensor u)")
                if want_logits is True:
                    logits = logits[:, : tpos + 1]
                scalar = _scalar_from_logits(model, metric, logits)
                _NonFinite.check(scalar.detach(), "the metric")
                grads = _grad(scalar, inputs)
                sq = torch.stack([_norms(g, 1) for g in grads])
                out["values_sq"] = sq
            else:
                if target_name not in cap.acts:
                    raise HookError(f"the target hook {target_name!r} did not fire during the run")
                y = cap.acts[target_name][0, tpos]
                _NonFinite.check(y.detach(), target_name)
                if method == "scalar":
                    u = metric.to(device=y.device, dtype=y.dtype)
                    if u.shape != y.shape:
                        raise GlassesError(
                            f"a vector metric must have the target's shape {tuple(y.shape)}, got {tuple(u.shape)}"
                        )
                    grads = _grad((y * u).sum(), inputs)
                    out["values_sq"] = torch.stack([_norms(g, 1) for g in grads])
                else:
                    width = int(y.numel())
                    total = width if method == "jacobian" else probes
                    act_width = int(inputs[0][0, 0].numel())
                    chunker = _jacobian_chunk if method == "jacobian" else _auto_chunk
                    k = chunk_size or chunker(model, n, len(inputs), act_width, total, memory_budget)
                    if method == "jacobian":
                        out["values_sq"] = _jacobian_sq(y, inputs, k)
                    else:
                        est, se = _hutchinson_sq(y, inputs, probes, k, seed, probe_dist)
                        out["values_sq"], out["stderr_sq"] = est, se
                    out["chunk_size"] = torch.tensor(k)
    except _NonFinite as exc:
        raise_if_nonfinite(model, tokens, torch.tensor(float("nan")), exc.what)
    elapsed = time.perf_counter() - t0

    values_sq = out["values_sq"].clamp_min(0)
    values = values_sq.sqrt()
    tensors = {"values": values.float(), "values_sq": values_sq, "tokens": tokens[0].cpu()}
    if "stderr_sq" in out:
        tensors["stderr_sq"] = out["stderr_sq"]
    meta = dict(
        model=_model_name(model),
        method=method,
        wrt=wrt_names,
        single_wrt=single,
        target=target_name,
        target_pos=tpos,
        n_tokens=n,
        probes=probes if method == "hutchinson" else None,
        probe_dist=probe_dist if method == "hutchinson" else None,
        seed=seed if method == "hutchinson" else None,
        metric=_describe_metric(metric) if method == "scalar" else None,
        chunk_size=int(out["chunk_size"]) if "chunk_size" in out else None,
        dtype=str(model_dtype(model)),
        attn_impl=impl,
        seconds=round(elapsed, 4),
    )
    return SensitivityResult(df=_frame(model, tokens, wrt_names, tensors), meta=meta, tensors=tensors)
