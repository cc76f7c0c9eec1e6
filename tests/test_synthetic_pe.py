"""Positional encodings of the synthetic lab against independent implementations:
transformers' DistilBERT sinusoid, BLOOM's ALiBi tensor, Llama's rotary embedding,
and the papers' formulas written out again here with ``math``."""
from __future__ import annotations

import math

import pytest
import torch

from tl_glasses.synthetic import (
    SyntheticDecoder,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_cos_sin,
    sinusoidal_table,
)


# -- sinusoidal -----------------------------------------------------------------------
def test_sinusoidal_matches_distilbert_and_the_formula():
    from transformers.models.distilbert.modeling_distilbert import _create_sinusoidal_embeddings

    n, d = 300, 64
    ref = torch.empty(n, d)
    _create_sinusoidal_embeddings(n_pos=n, dim=d, out=ref)
    ours = sinusoidal_table(n, d)
    assert torch.allclose(ours.float(), ref, atol=1e-6, rtol=0)
    # Vaswani et al. Sec. 3.5, element by element
    for pos in (0, 1, 7, 299):
        for i in range(d // 2):
            w = pos / 10000 ** (2 * i / d)
            assert ours[pos, 2 * i].item() == pytest.approx(math.sin(w), abs=1e-12)
            assert ours[pos, 2 * i + 1].item() == pytest.approx(math.cos(w), abs=1e-12)


def test_model_adds_the_sinusoid_to_the_embeddings_in_computed_mode():
    from transformers.models.distilbert.modeling_distilbert import _create_sinusoidal_embeddings

    m = SyntheticDecoder("sinusoidal", d_model=32, n_heads=2)
    toks = torch.randint(4, 100, (1, 40))
    _, cache = m.run_with_cache(toks, names_filter=["hook_pos_embed", "hook_embed", "blocks.0.hook_resid_pre"])
    ref = torch.empty(40, 32)
    _create_sinusoidal_embeddings(n_pos=40, dim=32, out=ref)
    assert torch.allclose(cache["hook_pos_embed"][0], ref, atol=1e-6)
    assert torch.equal(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])


def test_sampled_mode_puts_the_sinusoid_into_q_and_k_only():
    m = SyntheticDecoder("sinusoidal", qkv="sampled", d_model=32, n_heads=2, dtype=torch.float64)
    toks = torch.tensor([[7, 7, 7, 7, 7]])
    _, c = m.run_with_cache(toks, names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
    pe = sinusoidal_table(5, 16) * m.cfg.pe_scale
    for name, table in (("q", m.blocks[0].attn.Q_table), ("k", m.blocks[0].attn.K_table)):
        got = c[f"blocks.0.attn.hook_{name}"][0]  # [pos, head, d_head]
        assert torch.allclose(got, table[7][None] + pe[:, None], atol=1e-12)
    v = c["blocks.0.attn.hook_v"][0]
    assert torch.equal(v, m.blocks[0].attn.V_table[7][None].expand_as(v))


# -- ALiBi --------------------------------------------------------------------------------
@pytest.mark.parametrize("n_heads", list(range(1, 34)))
def test_alibi_slopes_match_bloom(n_heads):
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    ref = _get_alibi_slopes(n_heads, torch.device("cpu"))
    assert torch.allclose(alibi_slopes(n_heads).float(), ref, rtol=1e-6, atol=0)


def test_alibi_slopes_follow_the_paper():
    # Press et al. (2022): 8 heads -> 1/2, 1/4, ..., 1/256
    assert alibi_slopes(8).tolist() == [2.0 ** -(h + 1) for h in range(8)]
    # 16 heads -> 2^-0.5, 2^-1, ...; one head -> 2^-8
    assert torch.allclose(alibi_slopes(16), torch.tensor([2.0 ** (-(h + 1) / 2) for h in range(16)], dtype=torch.float64))
    assert alibi_slopes(1).tolist() == [2.0**-8]


def test_alibi_bias_gives_blooms_attention():
    """BLOOM adds ``m_h * j`` (key position) and relies on softmax's shift invariance;
    with the causal mask that is the same distribution as ``-m_h (i - j)``."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    H, n = 6, 50
    scores = torch.randn(H, n, n, dtype=torch.float64)
    pos = torch.arange(n)
    ours = alibi_bias(pos, pos, alibi_slopes(H))
    bloom = build_alibi_tensor(torch.ones(1, n), H, torch.float64).view(H, 1, n)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    p1 = torch.softmax((scores + ours).masked_fill(~mask, float("-inf")), -1)
    p2 = torch.softmax((scores + bloom).masked_fill(~mask, float("-inf")), -1)
    assert torch.allclose(p1, p2, atol=1e-6, rtol=0)  # BLOOM's slopes are float32
    assert ours[2, 10, 3].item() == pytest.approx(-alibi_slopes(H)[2].item() * 7)


def test_model_scores_carry_the_alibi_bias():
    for causal in (True, False):
        m = SyntheticDecoder("alibi", causal, n_heads=4, d_model=32, dtype=torch.float64)
        toks = torch.randint(4, 100, (1, 12))
        _, c = m.run_with_cache(toks, names_filter=["blocks.0.attn.hook_q", "blocks.0.attn.hook_k",
                                                    "blocks.0.attn.hook_attn_scores"])
        q, k = c["blocks.0.attn.hook_q"][0], c["blocks.0.attn.hook_k"][0]
        raw = torch.einsum("qhe,khe->hqk", q, k) / math.sqrt(8)
        got = c["blocks.0.attn.hook_attn_scores"][0]
        i, j = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
        dist = (i - j).double() if causal else (i - j).abs().double()
        expect = raw - alibi_slopes(4)[:, None, None] * dist
        keep = (j <= i) if causal else torch.ones_like(i, dtype=torch.bool)
        assert torch.allclose(got[:, keep], expect[:, keep], atol=1e-12)
        if causal:
            assert (got[:, ~keep] == torch.finfo(torch.float64).min).all()


# -- RoPE ---------------------------------------------------------------------------------
def _llama_rope(head_dim: int, base: float = 10000.0):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                      max_position_embeddings=4096, rope_theta=base)
    return LlamaRotaryEmbedding(cfg)


@pytest.mark.parametrize("head_dim", [8, 32, 64])
def test_rope_tables_match_llama(head_dim):
    rot = _llama_rope(head_dim)
    pos = torch.arange(0, 3000, 7)
    cos_ref, sin_ref = rot(torch.zeros(1, dtype=torch.float32), pos[None])
    cos, sin = rope_cos_sin(pos, head_dim)
    assert torch.allclose(cos, cos_ref[0], atol=1e-6, rtol=0)
    assert torch.allclose(sin, sin_ref[0], atol=1e-6, rtol=0)


def test_apply_rope_matches_llama_apply_rotary_pos_emb():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    B, n, H, dh = 2, 20, 3, 16
    q, k = torch.randn(B, n, H, dh), torch.randn(B, n, H, dh)
    pos = torch.arange(n)
    cos, sin = _llama_rope(dh)(q, pos[None])
    q_ref, k_ref = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # [B, H, n, dh]
    c, s = rope_cos_sin(pos, dh)
    assert torch.allclose(apply_rope(q, c, s), q_ref.transpose(1, 2), atol=1e-6)
    assert torch.allclose(apply_rope(k, c, s), k_ref.transpose(1, 2), atol=1e-6)


def test_model_rotary_hooks_match_llama_and_depend_on_relative_position():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    m = SyntheticDecoder("rope", n_heads=2, d_model=32)
    toks = torch.randint(4, 100, (1, 30))
    names = [f"blocks.0.attn.hook_{x}" for x in ("q", "k", "rot_q", "rot_k")]
    _, c = m.run_with_cache(toks, names_filter=names)
    q, k = c[names[0]], c[names[1]]
    cos, sin = _llama_rope(16)(q, torch.arange(30)[None])
    q_ref, k_ref = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    assert torch.allclose(c[names[2]], q_ref.transpose(1, 2), atol=1e-6)
    assert torch.allclose(c[names[3]], k_ref.transpose(1, 2), atol=1e-6)
    # the defining property: <R_a x, R_b y> depends on a - b only
    x, y = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    pos = torch.arange(200)
    cs, sn = rope_cos_sin(pos, 16)
    rx = apply_rope(x.expand(1, 200, 1, 16), cs.double(), sn.double())[0, :, 0]
    ry = apply_rope(y.expand(1, 200, 1, 16), cs.double(), sn.double())[0, :, 0]
    for a, b in ((10, 3), (110, 103), (57, 50)):
        assert (rx[a] @ ry[b]).item() == pytest.approx((rx[7] @ ry[0]).item(), abs=1e-4)
