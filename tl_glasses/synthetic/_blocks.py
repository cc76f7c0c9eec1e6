"""The configuration and the layers of :class:`~tl_glasses.synthetic._model.SyntheticDecoder`:
:class:`SyntheticConfig` (TransformerLens-style ``cfg``), the Pre-LN block (norms,
attention with every positional encoding, MLP) and its hook points.

Re-exported by :mod:`tl_glasses.synthetic._model`, where they always were.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformer_lens.hook_points import HookPoint

from ._pe import alibi_bias, alibi_slopes, apply_rope, rope_cached, sinusoidal_cached


_TL_PE_NAME = {"rope": "rotary", "alibi": "alibi", "sinusoidal": "sinusoidal", "none": "none"}


@dataclass
class SyntheticConfig:
    """The model's ``cfg``: TransformerLens' field names, plus the lab's own options."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    pe: str
    causal: bool
    qkv: str
    init_std: float
    pe_scale: float
    rope_base: float
    upcast_softmax: bool
    seed: int
    dtype: torch.dtype
    device: str
    eps: float = 1e-5
    act_fn: str = "gelu"
    normalization_type: str = "LN"
    default_prepend_bos: bool = False
    tokenizer_prepends_bos: bool = False
    model_name: str = "synthetic-decoder"
    original_architecture: str = "SyntheticDecoder"
    n_key_value_heads: int | None = None
    use_local_attn: bool = False
    window_size: int | None = None

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def positional_embedding_type(self) -> str:
        return _TL_PE_NAME[self.pe]

    @property
    def attention_dir(self) -> str:
        return "causal" if self.causal else "bidirectional"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pe": self.pe, "causal": self.causal, "qkv": self.qkv, "n_layers": self.n_layers,
            "d_model": self.d_model, "n_heads": self.n_heads, "d_head": self.d_head, "d_mlp": self.d_mlp,
            "n_ctx": self.n_ctx, "d_vocab": self.d_vocab, "init_std": self.init_std,
            "pe_scale": self.pe_scale, "rope_base": self.rope_base, "upcast_softmax": self.upcast_softmax,
            "seed": self.seed, "dtype": str(self.dtype).replace("torch.", ""),
        }


def _rows(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``table[tokens]`` (``index_select`` is many times faster than advanced indexing)."""
    return table.index_select(0, tokens.reshape(-1)).view(*tokens.shape, *table.shape[1:])


class _Norm(nn.Module):
    """LayerNorm with TransformerLens' hooks: ``hook_scale`` (the std),
    ``hook_normalized`` (before the learned scale, as on TransformerBridge) and
    ``hook_out`` (after it: what the next component reads)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = self.hook_normalized(x / scale)
        return self.hook_out(x * self.w + self.b)


class _Attention(nn.Module):
    def __init__(self, cfg: SyntheticConfig, gen: torch.Generator):
        super().__init__()
        self.cfg = cfg
        H, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        if cfg.qkv == "computed":
            # LayerNorm output has unit RMS, so q, k, v entries have std init_std
            std = cfg.init_std / math.sqrt(d)
            self.W_Q = nn.Parameter(torch.randn(H, d, dh, generator=gen) * std)
            self.W_K = nn.Parameter(torch.randn(H, d, dh, generator=gen) * std)
            self.W_V = nn.Parameter(torch.randn(H, d, dh, generator=gen) * std)
        else:  # one fixed row of q, k, v per token id: equal tokens get equal q, k, v
            V = cfg.d_vocab
            self.Q_table = nn.Parameter(torch.randn(V, H, dh, generator=gen) * cfg.init_std)
            self.K_table = nn.Parameter(torch.randn(V, H, dh, generator=gen) * cfg.init_std)
            self.V_table = nn.Parameter(torch.randn(V, H, dh, generator=gen) * cfg.init_std)
        # a value row of RMS init_std maps to an output of RMS ~1, like the embeddings
        self.W_O = nn.Parameter(torch.randn(H, dh, d, generator=gen) / (cfg.init_std * math.sqrt(H * dh)))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        if cfg.pe == "rope":
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(
        self, h: torch.Tensor | None, tokens: torch.Tensor, dtype: torch.dtype, last_only: bool, pos: torch.Tensor
    ) -> torch.Tensor:
        cfg = self.cfg
        n = tokens.shape[1]
        idx = torch.arange(n, device=tokens.device)  # order, for the causal mask
        q_pos = pos[-1:] if last_only else pos  # the fast path forms the last query only
        q_idx = idx[-1:] if last_only else idx
        top = int(pos.max()) + 1
        if cfg.qkv == "computed":
            q = torch.einsum("bpd,hde->bphe", h[:, -1:] if last_only else h, self.W_Q)
            k = torch.einsum("bpd,hde->bphe", h, self.W_K)
            v = torch.einsum("bpd,hde->bphe", h, self.W_V)
        else:
            q = _rows(self.Q_table, tokens[:, -1:] if last_only else tokens)
            k, v = _rows(self.K_table, tokens), _rows(self.V_table, tokens)
            if cfg.pe == "sinusoidal":  # Sec. 2: position enters the scores only, k(q_i, k_j, p_ij)
                pe = (sinusoidal_cached(top, cfg.d_head) * cfg.pe_scale).to(dtype=dtype, device=q.device)
                q, k = q + pe[None, q_pos, None], k + pe[None, pos, None]
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if cfg.pe == "rope":
            cos, sin = rope_cached(top, cfg.d_head, cfg.rope_base).to(q.device)
            q = self.hook_rot_q(apply_rope(q, cos[q_pos], sin[q_pos]))
            k = self.hook_rot_k(apply_rope(k, cos[pos], sin[pos]))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)
        if cfg.pe == "alibi":
            wide = torch.float64 if scores.dtype == torch.float64 else torch.float32
            bias = alibi_bias(q_pos, pos, alibi_slopes(cfg.n_heads).to(q.device), causal=cfg.causal, dtype=wide)
            scores = scores + bias.to(scores.dtype)[None]
        if cfg.causal:
            future = idx[None, :] > q_idx[:, None]
            scores = scores.masked_fill(future[None, None], torch.finfo(scores.dtype).min)
        scores = self.hook_attn_scores(scores)
        if cfg.upcast_softmax and torch.finfo(scores.dtype).bits < 32:
            pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)
        else:
            pattern = F.softmax(scores, dim=-1)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O


class _MLP(nn.Module):
    def __init__(self, cfg: SyntheticConfig, gen: torch.Generator):
        super().__init__()
        d, m = cfg.d_model, cfg.d_mlp
        self.W_in = nn.Parameter(torch.randn(d, m, generator=gen) / math.sqrt(d))
        self.b_in = nn.Parameter(torch.zeros(m))
        self.W_out = nn.Parameter(torch.randn(m, d, generator=gen) / math.sqrt(m))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        return self.hook_post(F.gelu(pre)) @ self.W_out + self.b_out


class _Block(nn.Module):
    def __init__(self, cfg: SyntheticConfig, gen: torch.Generator):
        super().__init__()
        self.cfg = cfg
        if cfg.qkv == "computed":
            self.ln1 = _Norm(cfg.d_model, cfg.eps)
        self.attn = _Attention(cfg, gen)
        if cfg.d_mlp:
            self.ln2 = _Norm(cfg.d_model, cfg.eps)
            self.mlp = _MLP(cfg, gen)
            self.hook_mlp_out = HookPoint()
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor, tokens: torch.Tensor, last_only: bool, pos: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        h = self.ln1(resid) if self.cfg.qkv == "computed" else None
        attn_out = self.hook_attn_out(self.attn(h, tokens, resid.dtype, last_only, pos))
        if last_only:
            resid = resid[:, -1:]
        resid = self.hook_resid_mid(resid + attn_out)
        if self.cfg.d_mlp:
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid)
