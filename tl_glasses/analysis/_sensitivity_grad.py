"""The estimators of :func:`~tl_glasses.analysis.sensitivity.sensitivity` (whose one
hooked forward, the ``wrt`` activations with the first as a leaf and the target, runs
through :func:`tl_glasses.capture.capturing`): the backward passes that turn it into
squared norms (exact Jacobian from batched one-hot
vector–Jacobian products, Hutchinson from random probes).

Everything here is re-exported by :mod:`tl_glasses.analysis.sensitivity`, where it
always was.
"""
from __future__ import annotations

import math

import torch

from ..errors import HookError


def _norms(g: torch.Tensor, pos_dim: int) -> torch.Tensor:
    """Sum of squares over every dim except ``pos_dim`` (accumulated in float64)."""
    g = g.detach().to(torch.float64)
    dims = [d for d in range(g.ndim) if d != pos_dim]
    return g.pow(2).sum(dim=dims)


def _per_probe_norms(g: torch.Tensor) -> torch.Tensor:
    """[probes, batch=1, pos, ...] -> [probes, pos] sums of squares (float64)."""
    g = g.detach().to(torch.float64)
    return g.pow(2).flatten(3).sum(-1)[:, 0] if g.ndim > 3 else g.pow(2)[:, 0]


def _grad(scalar_or_y, inputs, **kw):
    grads = torch.autograd.grad(scalar_or_y, inputs, allow_unused=True, **kw)
    bad = [i for i, g in enumerate(grads) if g is None]
    if bad:
        raise HookError(
            "the target does not depend on the activation at "
            f"{[inputs[i].shape for i in bad]} (no gradient path); check the wrt hooks"
        )
    return grads


def _jacobian_sq(y: torch.Tensor, inputs: list[torch.Tensor], k: int) -> torch.Tensor:
    """Exact squared Frobenius norms Σ_o ‖∂y_o/∂h_i‖² for every wrt and position,
    from one-hot vector–Jacobian products, ``k`` at a time through one graph."""
    width = y.numel()
    acc = [torch.zeros(a.shape[1], dtype=torch.float64, device=a.device) for a in inputs]
    flat_shape = y.shape
    starts = list(range(0, width, k))
    if k == 1:  # one VJP at a time: a plain backward, no vmap
        flat = y.reshape(-1)
        for o in range(width):
            e_o = torch.zeros_like(flat)
            e_o[o] = 1
            grads = _grad(y, inputs, grad_outputs=e_o.reshape(flat_shape), retain_graph=o < width - 1)
            for a, g in zip(acc, grads):
                a += _norms(g, 1)
        return torch.stack(acc)
    for j, s in enumerate(starts):
        e = min(width, s + k)
        eye = torch.zeros(e - s, width, dtype=y.dtype, device=y.device)
        eye[torch.arange(e - s), torch.arange(s, e)] = 1
        grads = _grad(
            y, inputs, grad_outputs=eye.reshape(e - s, *flat_shape),
            retain_graph=j < len(starts) - 1, is_grads_batched=True,
        )
        for a, g in zip(acc, grads):
            a += _per_probe_norms(g).sum(0)
    return torch.stack(acc)


def _hutchinson_sq(y, inputs, probes: int, k: int, seed: int, dist: str):
    gen = torch.Generator(device=y.device).manual_seed(int(seed))
    per = [[] for _ in inputs]
    starts = list(range(0, probes, k))
    for j, s in enumerate(starts):
        e = min(probes, s + k)
        if dist == "gaussian":
            u = torch.randn((e - s, *y.shape), generator=gen, device=y.device, dtype=torch.float32)
        else:
            u = torch.randint(0, 2, (e - s, *y.shape), generator=gen, device=y.device).float() * 2 - 1
        grads = _grad(y, inputs, grad_outputs=u.to(y.dtype), retain_graph=j < len(starts) - 1,
                      is_grads_batched=True)
        for p, g in zip(per, grads):
            p.append(_per_probe_norms(g))
    est, se = [], []
    for p in per:
        x = torch.cat(p)  # [probes, pos]
        est.append(x.mean(0))
        se.append(x.std(0, unbiased=True) / math.sqrt(probes))
    return torch.stack(est), torch.stack(se)
