"""Positional encodings of the synthetic lab: sinusoidal (absolute), ALiBi, RoPE.

Written from the papers' formulas; ``tests/test_synthetic_pe.py`` checks each one
against an independent implementation (transformers' DistilBERT sinusoid, BLOOM's
ALiBi tensor, Llama's rotary embedding) as well as against the formulas written out
again in plain Python.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "PE_NAMES",
    "sinusoidal_table",
    "alibi_slopes",
    "alibi_bias",
    "rope_cos_sin",
    "apply_rope",
]

PE_NAMES = ("rope", "alibi", "sinusoidal", "none")


def sinusoidal_table(n_pos: int, dim: int, *, base: float = 10000.0, offset: int = 0) -> torch.Tensor:
    """Vaswani et al. (2017, Sec. 3.5), interleaved: ``PE[p, 2i] = sin(p / base^(2i/dim))``,
    ``PE[p, 2i+1] = cos(p / base^(2i/dim))`` for positions ``offset .. offset+n_pos-1``.

    Computed in float64; cast it to the activations' dtype where it is used.
    """
    pos = torch.arange(offset, offset + n_pos, dtype=torch.float64)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float64)
    angle = pos / base ** (i / dim)
    out = torch.zeros(n_pos, dim, dtype=torch.float64)
    out[:, 0::2] = torch.sin(angle)
    out[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return out


_TABLES: dict[tuple, torch.Tensor] = {}


def _cached(kind: str, n_pos: int, dim: int, base: float, make) -> torch.Tensor:
    """Tables for positions ``0 .. n_pos-1``, grown (never shrunk) per ``(kind, dim, base)``;
    returned as read-only views: callers must not write into them."""
    key = (kind, dim, float(base))
    t = _TABLES.get(key)
    if t is None or t.shape[-2] < n_pos:
        t = make(max(n_pos, 1024))
        _TABLES[key] = t
    return t[..., :n_pos, :]


def sinusoidal_cached(n_pos: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """:func:`sinusoidal_table` for positions ``0 .. n_pos-1``, from a per-process cache."""
    return _cached("sin", n_pos, dim, base, lambda m: sinusoidal_table(m, dim, base=base))


def rope_cached(n_pos: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``stack(rope_cos_sin(arange(n_pos), dim))``: ``[2, n_pos, dim]``, from a cache."""
    return _cached("rope", n_pos, dim, base, lambda m: torch.stack(rope_cos_sin(torch.arange(m), dim, base=base)))


def _power_of_2_slopes(n: int) -> list[float]:
    start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))  # = 2^(-8/n)
    return [start ** (h + 1) for h in range(n)]


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Head slopes of ALiBi (Press et al., 2022, Sec. 3): the geometric sequence
    ``2^(-8/n), 2^(-16/n), …, 2^(-8)`` for ``n`` heads a power of two; otherwise the
    slopes of the closest power of two below, then every other slope of twice that
    count (the authors' reference code). One head gets ``2^-8``."""
    if n_heads < 1:
        raise ValueError("n_heads must be at least 1")
    if math.log2(n_heads).is_integer():
        slopes = _power_of_2_slopes(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = _power_of_2_slopes(closest) + _power_of_2_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    slopes: torch.Tensor,
    *,
    causal: bool = True,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``[head, q, k]`` additive score bias ``-m_h (i - j)`` (causal) or ``-m_h |i - j|``
    (bidirectional, the symmetric variant used for encoders), formed in ``dtype`` from
    integer positions."""
    dist = q_pos.to(dtype)[:, None] - k_pos.to(dtype)[None, :]
    if not causal:
        dist = dist.abs()
    return -slopes.to(dtype)[:, None, None] * dist[None]


def rope_cos_sin(
    positions: torch.Tensor, dim: int, *, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[pos, dim]`` for rotary embeddings (Su et al., 2021) in the
    "rotate half" layout of GPT-NeoX and Llama: frequency ``base^(-2i/dim)`` for
    ``i < dim/2``, repeated for both halves. Angles are formed in float32, as
    transformers does, so the tables match the ones real models use."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {dim}")
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``[batch, pos, head, d_head]`` by per-position angles
    (``cos``/``sin`` of shape ``[pos, d_head]``): ``x cos + rotate_half(x) sin``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    cos = cos.to(x.dtype)[None, :, None, :]
    sin = sin.to(x.dtype)[None, :, None, :]
    return x * cos + rotated * sin
