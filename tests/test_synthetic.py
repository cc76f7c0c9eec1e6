"""SyntheticDecoder: the TransformerLens surface, and its forward pass against an
independent re-implementation (F.layer_norm, F.scaled_dot_product_attention,
transformers' rotary helper, BLOOM's ALiBi tensor, DistilBERT's sinusoid)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tl_glasses as tg
from tl_glasses._core import FINAL, as_tokens, check_hooks, hook_snapshot, require_eval
from tl_glasses.errors import ContextLengthError, GlassesError, HookError, TokenizationError, UnknownNameError
from tl_glasses.synthetic import CHAR_VOCAB, PE_NAMES, SyntheticDecoder, alibi_slopes


# -- an independent forward pass ----------------------------------------------------------
def reference_logits(m: SyntheticDecoder, tokens: torch.Tensor) -> torch.Tensor:
    """The paper's Pre-LN decoder (Sec. 2) written again from the parameters, in float64,
    with torch's own layer norm and SDPA kernel and transformers' PE helpers."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cfg = m.cfg
    P = {k: v.detach().double() for k, v in m.named_parameters()}
    n = tokens.shape[1]
    H, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
    x = P["embed.W_E"][tokens[0]]
    dim = d if cfg.qkv == "computed" else dh
    # Vaswani et al.'s formula in float64 (DistilBERT's table, checked in test_synthetic_pe, is float32)
    angle = np.array([[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(n)])
    table = torch.tensor(np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle)))
    if cfg.pe == "sinusoidal" and cfg.qkv == "computed":
        x = x + table.double() * cfg.pe_scale
    pos = torch.arange(n)
    if cfg.causal:
        mask = torch.zeros(n, n, dtype=torch.float64).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -math.inf)
    else:
        mask = torch.zeros(n, n, dtype=torch.float64)
    bias = torch.zeros(H, n, n, dtype=torch.float64)
    if cfg.pe == "alibi":
        if cfg.causal:  # BLOOM's form: + m_h * j, equal after softmax under the causal mask
            bias = build_alibi_tensor(torch.ones(1, n), H, torch.float64).view(H, 1, n).expand(H, n, n)
        else:
            bias = -alibi_slopes(H)[:, None, None] * (pos[:, None] - pos[None]).abs().double()
    for l in range(cfg.n_layers):
        pre = f"blocks.{l}."
        if cfg.qkv == "computed":
            h = F.layer_norm(x, (d,), P[pre + "ln1.w"], P[pre + "ln1.b"], cfg.eps)
            q = torch.stack([h @ P[pre + "attn.W_Q"][i] for i in range(H)])  # [H, n, dh]
            k = torch.stack([h @ P[pre + "attn.W_K"][i] for i in range(H)])
            v = torch.stack([h @ P[pre + "attn.W_V"][i] for i in range(H)])
        else:
            q = P[pre + "attn.Q_table"][tokens[0]].transpose(0, 1)
            k = P[pre + "attn.K_table"][tokens[0]].transpose(0, 1)
            v = P[pre + "attn.V_table"][tokens[0]].transpose(0, 1)
            if cfg.pe == "sinusoidal":
                q = q + table.double() * cfg.pe_scale
                k = k + table.double() * cfg.pe_scale
        if cfg.pe == "rope":
            from transformers import LlamaConfig
            from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

            rot = LlamaRotaryEmbedding(LlamaConfig(hidden_size=2 * dh, num_attention_heads=2, head_dim=dh,
                                                   max_position_embeddings=n, rope_theta=cfg.rope_base))
            cos, sin = rot(torch.zeros(1), pos[None])
            q, k = apply_rotary_pos_emb(q[None], k[None], cos.double(), sin.double())
            q, k = q[0], k[0]
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask + bias)  # [H, n, dh], scale 1/sqrt(dh)
        x = x + sum(z[i] @ P[pre + "attn.W_O"][i] for i in range(H)) + P[pre + "attn.b_O"]
        if cfg.d_mlp:
            h2 = F.layer_norm(x, (d,), P[pre + "ln2.w"], P[pre + "ln2.b"], cfg.eps)
            x = x + F.gelu(h2 @ P[pre + "mlp.W_in"] + P[pre + "mlp.b_in"]) @ P[pre + "mlp.W_out"] + P[pre + "mlp.b_out"]
    y = F.layer_norm(x, (d,), P["ln_final.w"], P["ln_final.b"], cfg.eps)
    return (y @ P["unembed.W_U"] + P["unembed.b_U"])[None]


@pytest.mark.parametrize("pe", PE_NAMES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("qkv", ["computed", "sampled"])
def test_forward_matches_independent_reference(pe, causal, qkv):
    m = SyntheticDecoder(pe, causal, qkv=qkv, n_layers=2, d_model=32, n_heads=4, init_std=0.7,
                         dtype=torch.float64, seed=3)
    toks = torch.randint(4, 100, (1, 23), generator=torch.Generator().manual_seed(1))
    got = m(toks)
    ref = reference_logits(m, toks)
    assert torch.allclose(got, ref, atol=1e-10, rtol=1e-10), (got - ref).abs().max()


# -- the TransformerLens surface -----------------------------------------------------------
STANDARD = [
    "hook_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
    "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.attn.hook_q", "blocks.1.attn.hook_k",
    "blocks.1.attn.hook_v", "blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern",
    "blocks.1.attn.hook_z", "ln_final.hook_normalized", "ln_final.hook_out", "ln_final.hook_scale",
]


def test_hook_names_cfg_and_protocol():
    m = SyntheticDecoder("rope", n_layers=2)
    check_hooks(m, STANDARD + ["blocks.0.attn.hook_rot_q", "blocks.0.ln1.hook_normalized"])
    assert isinstance(m, tg.typing.Model)
    c = m.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_vocab, c.n_ctx) == (2, 64, 4, 16, 128, 16384)
    assert c.default_prepend_bos is False and c.device == "cpu" and c.dtype == torch.float32
    assert c.positional_embedding_type == "rotary" and c.attention_dir == "causal"
    require_eval(m)  # built in eval mode
    assert sum(p.numel() for p in m.parameters()) > 0
    sampled = SyntheticDecoder("alibi", qkv="sampled", d_mlp=0)
    assert "blocks.0.ln1.hook_normalized" not in sampled.hook_dict  # attention reads no input
    assert "blocks.0.hook_mlp_out" not in sampled.hook_dict


def test_shapes_of_the_standard_hooks():
    m = SyntheticDecoder("alibi", n_layers=2, d_model=32, n_heads=4)
    toks = m.to_tokens(["hello", "world"])
    logits, cache = m.run_with_cache(toks)
    assert logits.shape == (2, 5, 128)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 4, 5, 5)
    assert cache["blocks.1.attn.hook_attn_scores"].shape == (2, 4, 5, 5)
    assert cache["blocks.1.attn.hook_z"].shape == (2, 5, 4, 8)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 5, 4, 8)
    assert cache["blocks.0.hook_resid_post"].shape == (2, 5, 32)
    assert torch.equal(cache["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])
    assert torch.allclose(cache["blocks.0.hook_resid_post"],
                          cache["blocks.0.hook_resid_mid"] + cache["blocks.0.hook_mlp_out"])
    assert torch.allclose(cache["blocks.0.hook_resid_mid"],
                          cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"])
    # TransformerLens' cache indexing by short names works
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])


def test_patterns_are_causal_or_bidirectional_and_row_stochastic():
    for causal in (True, False):
        m = SyntheticDecoder("none", causal, n_layers=1, init_std=1.0)
        _, cache = m.run_with_cache(torch.randint(4, 100, (1, 9)), names_filter="blocks.0.attn.hook_pattern")
        p = cache["blocks.0.attn.hook_pattern"][0]
        assert torch.allclose(p.sum(-1), torch.ones(4, 9))
        above = p[:, ~torch.ones(9, 9, dtype=torch.bool).tril()]
        assert (above == 0).all() if causal else (above > 0).all()


def test_final_norm_hooks_and_learned_scale():
    m = SyntheticDecoder("rope")
    with torch.no_grad():
        m.ln_final.w.mul_(3.0)
    toks = m.to_tokens("12345")
    logits, cache = m.run_with_cache(toks, names_filter=["ln_final.hook_normalized", FINAL])
    assert torch.allclose(cache[FINAL], 3.0 * cache["ln_final.hook_normalized"])
    assert torch.allclose(logits, cache[FINAL] @ m.W_U + m.unembed.b_U)


def test_to_tokens_and_char_vocabulary():
    m = SyntheticDecoder("none")
    tok = m.tokenizer  # tl_glasses' character tokenizer: same ids
    text = "Count 1 1 1, please!"
    assert m.to_tokens(text)[0].tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert m.to_tokens(text, prepend_bos=True)[0, 0].item() == CHAR_VOCAB.index("<bos>")
    assert m.to_tokens([5, 6, 7]).tolist() == [[5, 6, 7]]
    assert m.to_tokens(torch.tensor([5, 6])).shape == (1, 2)
    assert m.to_tokens(["ab", "abc"]).tolist() == [[m.to_tokens("a")[0, 0].item(), m.to_tokens("b")[0, 0].item(), 0],
                                                   m.to_tokens("abc")[0].tolist()]
    assert m.to_string(m.to_tokens(text)[0]) == text
    assert m.to_str_tokens("1,0") == ["1", ",", "0"]
    assert torch.equal(as_tokens(m, "10"), m.to_tokens("10"))
    assert m.to_tokens("é’")[0].tolist() == tok("é’", add_special_tokens=False)["input_ids"] == [3, 3]
    with pytest.raises(TokenizationError, match="d_vocab"):
        SyntheticDecoder("none", d_vocab=20).to_tokens("z")


def test_errors_name_the_problem():
    with pytest.raises(UnknownNameError, match="'rope'"):
        SyntheticDecoder("learned")
    with pytest.raises(UnknownNameError, match="computed"):
        SyntheticDecoder("rope", qkv="random")
    m = SyntheticDecoder("rope", n_ctx=8)
    with pytest.raises(ContextLengthError, match="n_ctx=8"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(GlassesError, match="integer"):
        m(torch.zeros(1, 3))
    with pytest.raises(GlassesError, match="token ids"):
        m(torch.tensor([[500]]))
    with pytest.raises(HookError, match="closest: blocks.0.attn.hook_pattern"):
        m.run_with_cache(m.to_tokens("1"), names_filter=["blocks.0.attn.hook_patern"])
    with pytest.raises(HookError):
        with m.hooks(fwd_hooks=[("blocks.9.hook_resid_pre", lambda t, hook: t)]):
            pass
    assert m.list_hooks() == {}


def test_hooks_are_removed_and_edits_are_respected():
    m = SyntheticDecoder("rope", n_layers=2)
    toks = m.to_tokens("0123456789")
    before = hook_snapshot(m)
    base = m(toks)

    def uniform(scores, hook):  # replace the attention scores: the softmax must read the edit
        return torch.zeros_like(scores)

    edited = m.run_with_hooks(toks, fwd_hooks=[("blocks.1.attn.hook_attn_scores", uniform)])
    assert not torch.allclose(edited, base, atol=1e-4)
    _, cache = m.run_with_cache(toks, names_filter="blocks.1.attn.hook_pattern")
    with m.hooks(fwd_hooks=[("blocks.1.attn.hook_attn_scores", uniform)]):
        _, c2 = m.run_with_cache(toks, names_filter="blocks.1.attn.hook_pattern")
    assert torch.allclose(c2["blocks.1.attn.hook_pattern"][0], torch.full((4, 10, 10), 0.1))
    with pytest.raises(RuntimeError):
        with m.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", uniform)]):
            raise RuntimeError("boom")
    assert hook_snapshot(m) == before and m.list_hooks() == {}
    assert torch.equal(m(toks), base)


def test_seeded_and_same_weights_in_every_dtype():
    a, b, c = SyntheticDecoder("rope", seed=5), SyntheticDecoder("rope", seed=5), SyntheticDecoder("rope", seed=6)
    toks = a.to_tokens("hello")
    assert torch.equal(a(toks), b(toks))
    assert not torch.allclose(a(toks), c(toks))
    h = SyntheticDecoder("rope", seed=5, dtype=torch.bfloat16)
    assert h.cfg.dtype == torch.bfloat16 and h(toks).dtype == torch.bfloat16
    for (name, p32), (_, p16) in zip(a.named_parameters(), h.named_parameters()):
        assert torch.equal(p32.to(torch.bfloat16), p16), name
    a.to(torch.float64)
    assert a.cfg.dtype == torch.float64 and a(toks).dtype == torch.float64
    assert torch.allclose(a(toks).float(), b(toks), atol=1e-5)


def test_sampled_qkv_are_per_token_and_gaussian():
    m = SyntheticDecoder("none", qkv="sampled", d_model=64, n_heads=1, init_std=1.0, d_vocab=1024,
                         dtype=torch.float64)
    toks = torch.tensor([[5, 9, 5, 300, 9, 5]])
    twin = torch.cat([toks, toks[:, -1:]], 1)
    _, c = m.run_with_cache(toks, names_filter=lambda n: n.startswith("blocks.0.attn.hook_") and n[-1] in "qkv")
    _, ct = m.run_with_cache(twin, names_filter=lambda n: n.startswith("blocks.0.attn.hook_") and n[-1] in "qkv")
    for x in "qkv":
        t = c[f"blocks.0.attn.hook_{x}"][0, :, 0]
        assert torch.equal(t[0], t[2]) and torch.equal(t[0], t[5]) and torch.equal(t[1], t[4])
        assert not torch.equal(t[0], t[1])
        assert torch.equal(ct[f"blocks.0.attn.hook_{x}"][0, :6], c[f"blocks.0.attn.hook_{x}"][0])
        assert torch.equal(ct[f"blocks.0.attn.hook_{x}"][0, 6], ct[f"blocks.0.attn.hook_{x}"][0, 5])
    table = m.blocks[0].attn.Q_table
    assert table.std().item() == pytest.approx(1.0, rel=0.03) and abs(table.mean().item()) < 0.01
    d = SyntheticDecoder("none", qkv="sampled", d_model=64, n_heads=1)  # default: N(0, 1/d)
    assert d.blocks[0].attn.K_table.std().item() == pytest.approx(1 / 8, rel=0.05)


def test_computed_qkv_have_the_requested_std():
    m = SyntheticDecoder("none", d_model=256, n_heads=4, init_std=0.5)
    _, c = m.run_with_cache(torch.randint(4, 128, (1, 200)), names_filter="blocks.0.attn.hook_v")
    assert c["blocks.0.attn.hook_v"].std().item() == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize("pe", PE_NAMES)
def test_last_query_fast_path(pe):
    for qkv in ("computed", "sampled"):
        m = SyntheticDecoder(pe, qkv=qkv, n_layers=2, seed=1)
        toks = torch.randint(4, 128, (1, 300))
        full = m(toks)[0, -1]
        fast = m(toks, last_query_only=True)
        assert fast.shape == (1, 1, 128)
        assert torch.allclose(fast[0, -1], full, atol=1e-5, rtol=1e-5)
    m = SyntheticDecoder(pe, n_layers=1, seed=1, dtype=torch.bfloat16)
    toks = torch.randint(4, 128, (1, 300))
    diff = (m(toks, last_query_only=True)[0, -1].float() - m(toks)[0, -1].float()).abs()
    assert diff.max() <= 2 ** -6 * m(toks)[0, -1].float().abs().max()  # within ~2 bf16 ulps


def test_stop_at_layer_and_loss():
    m = SyntheticDecoder("rope", n_layers=3)
    toks = m.to_tokens("abcdefg")
    _, cache = m.run_with_cache(toks, names_filter="blocks.2.hook_resid_pre")
    assert torch.equal(m(toks, stop_at_layer=2), cache["blocks.2.hook_resid_pre"])
    assert torch.equal(m(toks, stop_at_layer=-1), cache["blocks.2.hook_resid_pre"])
    logits = m(toks)
    ref = F.cross_entropy(logits[0, :-1], toks[0, 1:])
    assert m(toks, return_type="loss").item() == pytest.approx(ref.item(), rel=1e-5)
    assert m(toks, return_type=None) is None


def test_gradients_reach_every_earlier_position_in_computed_mode():
    m = SyntheticDecoder("rope", n_layers=2)
    toks = m.to_tokens("0123456789")
    store = {}

    def grab(t, hook):
        t = t.detach().requires_grad_(True)
        store["x"] = t
        return t

    y = {}
    with m.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", grab)]):
        with m.hooks(fwd_hooks=[(FINAL, lambda t, hook: y.setdefault("y", t))]):
            m(toks, return_type=None)
    u = torch.randn(m.cfg.d_model)  # (the plain sum of a LayerNorm output is constant)
    (g,) = torch.autograd.grad(y["y"][0, -1] @ u, store["x"])
    assert (g[0].norm(dim=-1) > 0).all()
    assert all(p.grad is None for p in m.parameters())
    assert m.list_hooks() == {}


def test_position_ids_shift_what_the_encodings_see():
    toks = torch.randint(4, 128, (1, 12), generator=torch.Generator().manual_seed(0))
    shifted = torch.arange(5, 17)
    for pe in PE_NAMES:
        m = SyntheticDecoder(pe, n_layers=2, dtype=torch.float64)
        a, b = m(toks), m(toks, position_ids=shifted[None])
        if pe == "sinusoidal":  # absolute: a shift changes everything
            assert not torch.allclose(a, b, atol=1e-3)
        else:  # relative (RoPE, ALiBi) or none: a shift is a no-op in exact arithmetic
            assert torch.allclose(a, b, atol=1e-9), pe
    with pytest.raises(GlassesError, match="position_ids"):
        m(toks, position_ids=torch.arange(3))
