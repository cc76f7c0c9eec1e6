"""Gradient sensitivity (paper Sec. 5): exact Jacobian norms against
``torch.autograd.functional.jacobian`` of the plain transformers model, Hutchinson
against the exact value, the scalar method against a direct gradient, hygiene."""
from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

import tl_glasses as tg
from tl_glasses._core import hook_snapshot
from tl_glasses.analysis.sensitivity import SensitivityResult, sensitivity, u_shape
from tl_glasses.errors import GlassesError, HookError, UnknownNameError
from tl_glasses.models import tiny_hf_model

PROMPT = "1 1 1 0 1 2 3 4 5"


def _hf_jacobian_norms(hf, ids: torch.Tensor) -> torch.Tensor:
    """‖∂y_n/∂e_i‖_F from the plain transformers model: ``inputs_embeds`` is what the
    embedding module returns (Gemma's √d scaling included — the bridge's
    blocks.0.hook_resid_pre), ``y_n`` the last hidden state (final norm applied)."""
    emb = hf.get_input_embeddings()(ids)[0].detach()
    base = hf.base_model

    def f(e):
        return base(inputs_embeds=e[None]).last_hidden_state[0, -1]

    J = jacobian(f, emb, vectorize=True)  # [d_out, n, d_in]
    return J.double().pow(2).sum(dim=(0, 2)).sqrt()


def _tiny_pair(arch):
    kw = {"n_layers": 3} if arch == "gemma3" else {}
    return tg.tiny_model(arch, seed=0, **kw), tiny_hf_model(arch, seed=0, **kw)


def _rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_jacobian_equals_transformers_jacobian_tiny(arch):
    model, hf = _tiny_pair(arch)
    toks = model.to_tokens(PROMPT)
    res = sensitivity(model, toks, method="jacobian")
    ref = _hf_jacobian_norms(hf, toks)
    assert res.values.shape == (toks.shape[1],)
    assert _rel(res.values, ref) < 1e-5
    # the value is the square root of value_sq, which is what Hutchinson estimates
    assert torch.allclose(res.values_sq.sqrt().float(), res.values, rtol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_both_attention_kernels_equal_transformers_jacobian(arch, impl):
    """The fused (sdpa) path that ``attn_impl="auto"`` picks and the bridge's eager
    attention give the same exact Jacobian, each equal to transformers'."""
    from tl_glasses.analysis._fused import fused_supported

    model, hf = _tiny_pair(arch)
    toks = model.to_tokens(PROMPT)
    if impl == "sdpa" and not fused_supported(model):  # e.g. GPT-2's attention: eager only
        assert sensitivity(model, toks, method="scalar").meta["attn_impl"] == "eager"
        with pytest.raises(GlassesError, match="does not reproduce eager"):
            sensitivity(model, toks, method="scalar", attn_impl="sdpa")
        return
    res = sensitivity(model, toks, method="jacobian", attn_impl=impl)
    assert res.meta["attn_impl"] == impl
    assert _rel(res.values, _hf_jacobian_norms(hf, toks)) < 1e-5


def test_auto_kernel_is_fused_unless_a_hook_needs_patterns(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)
    assert sensitivity(tiny_llama, toks, method="scalar").meta["attn_impl"] == "sdpa"
    res = sensitivity(tiny_llama, toks, method="scalar", wrt="blocks.0.hook_attn_out")
    assert res.meta["attn_impl"] == "eager"
    with pytest.raises(GlassesError, match="sdpa"):
        sensitivity(tiny_llama, toks, method="scalar", wrt="blocks.0.hook_attn_out", attn_impl="sdpa")
    # a pattern hook the user attached beforehand keeps the run on the eager path, where it fires
    seen = []
    tiny_llama.add_hook("blocks.1.attn.hook_pattern", lambda t, hook: seen.append(t.shape))
    try:
        assert sensitivity(tiny_llama, toks, method="scalar").meta["attn_impl"] == "eager"
    finally:
        tiny_llama.reset_hooks()
    assert seen
    assert sensitivity(tiny_llama, toks, method="scalar").meta["attn_impl"] == "sdpa"


def test_batched_probes_equal_one_at_a_time(tiny_gemma3):
    """DESIGN §4: batching the VJPs must not change the numbers."""
    toks = tiny_gemma3.to_tokens(PROMPT)
    a = sensitivity(tiny_gemma3, toks, chunk_size=1)
    b = sensitivity(tiny_gemma3, toks, chunk_size=7)
    c = sensitivity(tiny_gemma3, toks)  # one chunk of all 32 probes
    assert c.meta["chunk_size"] == 32
    assert _rel(b.values, a.values) < 1e-6 and _rel(c.values, a.values) < 1e-6


def test_cpu_jacobian_chunks_are_capped(tiny_llama, monkeypatch):
    """On a CPU the exact Jacobian's default chunk is capped (large vmapped chunks are
    slower per probe there); Hutchinson keeps the caller's memory budget."""
    import tl_glasses.analysis.sensitivity as S

    toks = tiny_llama.to_tokens(PROMPT)
    per = S._per_probe_bytes(tiny_llama, toks.shape[1], 1, int(tiny_llama.cfg.d_model))
    monkeypatch.setattr(S, "CPU_JACOBIAN_BUDGET", 3 * per)
    capped = sensitivity(tiny_llama, toks)
    assert capped.meta["chunk_size"] == 3
    single = sensitivity(tiny_llama, toks, chunk_size=1)  # plain backward passes, no vmap
    assert _rel(capped.values, single.values) < 1e-6
    assert sensitivity(tiny_llama, toks, method="hutchinson", probes=8).meta["chunk_size"] == 8


def test_per_layer_wrt_matches_single_calls(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)
    allres = sensitivity(tiny_llama, toks, wrt="all")
    assert allres.values.shape == (2, toks.shape[1])
    for layer in range(2):
        one = sensitivity(tiny_llama, toks, wrt=layer)
        assert _rel(allres.values[layer], one.values) < 1e-6
    assert set(allres.df["wrt"]) == {"blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"}
    # position n-1 at layer L-1 sees the last token directly: the identity path of the residual
    assert allres.values[1, -1] > 0


def test_hutchinson_is_unbiased_within_standard_errors_tiny(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)
    exact = sensitivity(tiny_llama, toks).values_sq
    est = sensitivity(tiny_llama, toks, method="hutchinson", probes=400, seed=3)
    z = (est.values_sq - exact) / est.stderr_sq
    assert z.abs().max() < 4
    again = sensitivity(tiny_llama, toks, method="hutchinson", probes=400, seed=3, chunk_size=37)
    assert torch.allclose(again.values_sq, est.values_sq, rtol=1e-6)  # chunking leaves the probes unchanged
    rad = sensitivity(tiny_llama, toks, method="hutchinson", probes=400, seed=3, probe_dist="rademacher")
    assert ((rad.values_sq - exact) / rad.stderr_sq).abs().max() < 4


def test_scalar_metric_equals_direct_gradient(tiny_llama):
    hf = tiny_hf_model("llama", seed=0)
    toks = tiny_llama.to_tokens(PROMPT)
    emb = hf.get_input_embeddings()(toks).detach().requires_grad_(True)
    logits = hf(inputs_embeds=emb).logits[0, -1]
    tok_a, tok_b = 10, 11
    (g,) = torch.autograd.grad(logits[tok_a] - logits[tok_b], emb)
    res = sensitivity(tiny_llama, toks, method="scalar", metric=(tok_a, tok_b))
    assert _rel(res.values, g[0].norm(dim=-1)) < 1e-5
    # default metric: the top-1 logit
    top = int(logits.argmax())
    (g1,) = torch.autograd.grad(hf(inputs_embeds=emb).logits[0, -1, top], emb)
    assert _rel(sensitivity(tiny_llama, toks, method="scalar").values, g1[0].norm(dim=-1)) < 1e-5
    # callable metric on the last logits
    res2 = sensitivity(tiny_llama, toks, method="scalar", metric=lambda lg: lg[tok_a] - lg[tok_b])
    assert _rel(res2.values, res.values) < 1e-6


def test_vector_metric_is_one_row_of_the_jacobian(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)
    u = torch.zeros(32)
    u[5] = 1.0
    hf = tiny_hf_model("llama", seed=0)
    emb = hf.get_input_embeddings()(toks).detach().requires_grad_(True)
    y = hf.base_model(inputs_embeds=emb).last_hidden_state[0, -1]
    (g,) = torch.autograd.grad(y[5], emb)
    res = sensitivity(tiny_llama, toks, method="scalar", metric=u)
    assert _rel(res.values, g[0].norm(dim=-1)) < 1e-5


def test_intermediate_target_and_token_prompt(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)[0]
    res = sensitivity(tiny_llama, toks, target=0, target_pos=4)  # blocks.0.hook_resid_post at position 4
    v = res.values
    assert (v[5:] == 0).all()  # causal: later positions cannot reach position 4
    assert (v[:5] > 0).all()
    assert res.meta["target"] == "blocks.0.hook_resid_post" and res.meta["target_pos"] == 4


def test_hygiene_success_and_failure(tiny_llama):
    model = tiny_llama
    before = hook_snapshot(model)
    calls = []
    model.add_hook("blocks.1.hook_resid_pre", lambda t, hook: calls.append(1))  # the user's own hook
    user = hook_snapshot(model)
    assert user != before
    toks = model.to_tokens(PROMPT)
    for method in ("jacobian", "hutchinson", "scalar"):
        sensitivity(model, toks, method=method, probes=4)
        assert hook_snapshot(model) == user
    assert calls  # the user's hook ran and is still attached

    def boom(logits):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        sensitivity(model, toks, method="scalar", metric=boom)
    assert hook_snapshot(model) == user
    with pytest.raises(HookError, match="did not fire before the target"):
        sensitivity(model, toks, wrt="blocks.1.hook_resid_pre", target=0)
    assert hook_snapshot(model) == user
    with pytest.raises(HookError, match="closest"):
        sensitivity(model, toks, wrt="blocks.0.hook_resid_pree")
    assert hook_snapshot(model) == user
    assert all(p.grad is None for p in model.parameters())
    model.reset_hooks()
    assert hook_snapshot(model) == before


def test_errors(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)
    with pytest.raises(UnknownNameError, match="jacobian"):
        sensitivity(tiny_llama, toks, method="exact")
    with pytest.raises(GlassesError, match="at least 2 probes"):
        sensitivity(tiny_llama, toks, method="hutchinson", probes=1)
    with pytest.raises(GlassesError, match="method='scalar'"):
        sensitivity(tiny_llama, toks, metric=3)
    with pytest.raises(GlassesError, match="outside"):
        sensitivity(tiny_llama, toks, target_pos=100)
    with pytest.raises(GlassesError, match="single-token"):
        sensitivity(tiny_llama, toks, method="scalar", metric="12")
    with pytest.raises(GlassesError, match="shape"):
        sensitivity(tiny_llama, toks, method="scalar", metric=torch.ones(7))
    tiny_llama.train()
    try:
        with pytest.raises(GlassesError, match="training mode"):
            sensitivity(tiny_llama, toks)
    finally:
        tiny_llama.eval()


def test_result_roundtrip_plot_and_u_shape(tiny_gpt2, tmp_path):
    res = sensitivity(tiny_gpt2, "0123456789" * 3, wrt=[0, 1], method="hutchinson", probes=8)
    assert res.values.shape == (2, 31)
    assert {"value", "value_sq", "stderr", "stderr_sq", "share", "token"} <= set(res.df.columns)
    back = tg.Result.load(res.save(tmp_path / "s"))
    assert isinstance(back, SensitivityResult)
    assert torch.equal(back.values, res.values) and back.meta["wrt"] == res.meta["wrt"]
    assert back.df.equals(res.df)
    fig = back.plot()
    assert fig.axes[0].get_yscale() == "log"
    us = back.u_shape()
    assert list(us.columns[:4]) == ["wrt", "start", "middle", "end"]
    assert "sensitivity" in repr(back)
    # u_shape regions on a known vector
    u = u_shape(torch.tensor([5.0] * 10 + [1.0] * 80 + [3.0] * 10))
    assert u["start"] == 5 and u["middle"] == 1 and u["end"] == 3 and u["start/middle"] == 5


# --------------------------------------------------------------------------- real models


SHORT = "Copy 10"  # 5 tokens on SmolLM2 (BOS, 'Copy', ' ', '1', '0'): the exact Jacobian is d_model VJPs


@pytest.fixture(scope="module")
def smollm2_exact(smollm2):
    toks = smollm2.to_tokens(SHORT)
    return toks, sensitivity(smollm2, toks)


@pytest.mark.real
def test_jacobian_equals_transformers_jacobian_smollm2(smollm2, smollm2_exact):
    hf, _ = tg.models.load_hf("smollm2-135m")
    toks, res = smollm2_exact
    ref = _hf_jacobian_norms(hf, toks)
    assert res.meta["attn_impl"] == "sdpa"
    assert _rel(res.values, ref) < 1e-5
    assert _rel(sensitivity(smollm2, toks, attn_impl="eager").values, ref) < 1e-5
    assert all(p.grad is None for p in smollm2.parameters())


@pytest.mark.real
def test_hutchinson_real_model_within_3_se_and_error_shrinks_like_inverse_sqrt(smollm2, smollm2_exact):
    toks, exact_res = smollm2_exact
    exact = exact_res.values_sq
    est = sensitivity(smollm2, toks, method="hutchinson", probes=256, seed=0)
    z = ((est.values_sq - exact) / est.stderr_sq).abs()
    assert z.max() < 3, z
    # error vs k: root-mean-square relative error over positions and seeds (for an unbiased
    # mean of k iid terms it is σ/√k exactly); the log-log slope over k = 4, 16, 64 is -1/2
    ks, rms = [4, 16, 64], []
    for k, n_seeds in zip(ks, (16, 8, 4)):
        e = torch.cat([(sensitivity(smollm2, toks, method="hutchinson", probes=k, seed=100 + seed).values_sq
                        - exact) / exact for seed in range(n_seeds)])
        rms.append(float(e.pow(2).mean().sqrt()))
    slope = float(torch.linalg.lstsq(
        torch.stack([torch.log(torch.tensor(ks, dtype=torch.float64)), torch.ones(3, dtype=torch.float64)], 1),
        torch.log(torch.tensor(rms, dtype=torch.float64))[:, None]).solution[0])
    assert -0.65 < slope < -0.35, (ks, rms, slope)


@pytest.mark.real
def test_jacobian_equals_transformers_jacobian_gemma(gemma):
    """Gemma scales its embedding by √d_model inside the embedding module: the bridge's
    blocks.0.hook_resid_pre and transformers' inputs_embeds are both the scaled vector."""
    hf, _ = tg.models.load_hf("gemma-3-270m")
    toks = gemma.to_tokens("Copy 10")
    res = sensitivity(gemma, toks)
    ref = _hf_jacobian_norms(hf, toks)
    assert _rel(res.values, ref) < 1e-5
