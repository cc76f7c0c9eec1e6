"""tl_glasses on a TransformerLens 3.x ``HookedTransformer``: the protocol tests.

Models: small random HookedTransformers built from a ``HookedTransformerConfig``
(LayerNorm + absolute positions, RMSNorm + rotary, RMSNorm + rotary + grouped-query
attention; norm scales randomised so "before/after the learned scale" differs), and
HookedTransformers converted by TransformerLens 3.9's own weight conversion from
tl_glasses' tiny Llama and GPT-2, checked against the plain transformers model and
the TransformerBridge holding the same weights.

Run with ``bash ci/compat.sh`` (its own environment, transformer-lens 3.9).
"""
from __future__ import annotations

import copy
import os

import pytest

try:  # TransformerLens 4 removed HookedTransformer (and raises ImportError for it)
    from transformer_lens import HookedTransformer  # noqa: F401
except ImportError:
    if os.environ.get("TL_GLASSES_COMPAT") == "1":
        raise
    pytest.skip("needs transformer-lens 3.x: run ci/compat.sh", allow_module_level=True)

import torch

import tl_glasses as tg
from tl_glasses import compat
from tl_glasses._core import (
    FINAL,
    as_tokens,
    check_hooks,
    final_hook_name,
    hook_snapshot,
    hooks_context,
)
from tl_glasses.errors import ContextLengthError, GlassesError, HookError

PROMPT = "12,34;1 1 1 1"


def _y_reference(model, tokens):
    """y for every position, read where the unembedding reads it (independent of the
    adapter's hook point): ``unembed.hook_in`` during a full forward."""
    _, cache = model.run_with_cache(tokens, names_filter="unembed.hook_in")
    return cache["unembed.hook_in"][0]


def _n_torch_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
               for m in model.modules())


# --------------------------------------------------------------------------- protocol


def test_protocol_surface(ht):
    assert compat.missing_protocol(ht) == []
    compat.check_protocol(ht)
    assert isinstance(ht, tg.typing.Model)
    assert not compat.is_bridge(ht)

    class NotAModel:
        cfg = None

        def to_tokens(self, s):
            return s

    with pytest.raises(GlassesError, match="run_with_cache, run_with_hooks, hooks, hook_dict"):
        tg.as_glasses_model(NotAModel())


def test_tokens_in(ht):
    toks = as_tokens(ht, PROMPT)
    assert torch.equal(toks, ht.to_tokens(PROMPT))
    assert toks.shape == (1, len(PROMPT) + 1) and int(toks[0, 0]) == ht.tokenizer.bos_token_id
    # token tensors are used exactly as given
    raw = torch.tensor([5, 6, 7])
    assert torch.equal(as_tokens(ht, raw), raw[None])
    with pytest.raises(ContextLengthError, match="context is 128"):
        as_tokens(ht, torch.zeros(129, dtype=torch.long))
    with pytest.raises(GlassesError, match="token ids must lie in"):
        as_tokens(ht, torch.tensor([ht.cfg.d_vocab]))


def test_run_with_cache_names_filter(ht):
    toks = as_tokens(ht, PROMPT)
    n = toks.shape[1]
    names = ["blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_resid_pre",
             "blocks.1.hook_resid_post"]
    for flt in (names, lambda name: name in names):
        _, cache = ht.run_with_cache(toks, names_filter=flt)
        assert sorted(cache.keys()) == sorted(names)
    _, one = ht.run_with_cache(toks, names_filter="blocks.1.attn.hook_pattern")
    assert list(one.keys()) == ["blocks.1.attn.hook_pattern"]
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (1, ht.cfg.n_heads, n, n)  # [batch, head, q, k], as on the bridge
    assert cache["blocks.0.attn.hook_z"].shape == (1, n, ht.cfg.n_heads, ht.cfg.d_head)
    assert cache["blocks.0.hook_resid_pre"].shape == (1, n, ht.cfg.d_model)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(1, ht.cfg.n_heads, n))
    assert not pattern.triu(1).any()  # causal


def test_hooks_removed_on_every_path(ht):
    toks = as_tokens(ht, PROMPT)
    seen = []

    def user_hook(x, hook):
        seen.append(hook.name)

    ht.add_hook("blocks.0.hook_resid_post", user_hook)  # the user's own hook, kept throughout
    before = hook_snapshot(ht)
    assert list(before) == ["blocks.0.hook_resid_post"]

    fwd = [("blocks.0.hook_resid_pre", lambda x, hook: None), (FINAL, lambda x, hook: None)]
    bwd = [("blocks.0.hook_resid_pre", lambda g, hook: None)]
    final_hook_name(ht)  # adapt first: the adapter adds one permanent torch hook of its own
    torch_hooks = _n_torch_hooks(ht)
    with hooks_context(ht, fwd, bwd):
        assert hook_snapshot(ht) != before  # the snapshot sees hooks (it can fail)
        ht(toks)
    assert hook_snapshot(ht) == before and _n_torch_hooks(ht) == torch_hooks
    with pytest.raises(RuntimeError, match="boom"):
        with hooks_context(ht, fwd, bwd):
            raise RuntimeError("boom")
    assert hook_snapshot(ht) == before and _n_torch_hooks(ht) == torch_hooks
    # backward hooks added inside the context fire, and are gone afterwards
    grads = []
    emb = ht.embed.W_E
    with hooks_context(ht, bwd_hooks=[("blocks.0.hook_resid_pre", lambda g, hook: grads.append(g))]):
        (g,) = torch.autograd.grad(ht(toks)[0, -1, 3], emb)
    assert len(grads) == 1 and g.abs().sum() > 0 and emb.grad is None
    assert hook_snapshot(ht) == before
    seen.clear()
    ht(toks)
    assert seen == ["blocks.0.hook_resid_post"]  # the user's hook survived and fires
    ht.reset_hooks()
    assert hook_snapshot(ht) == {}


# --------------------------------------------------------------------------- adapter


def test_final_hook_is_y_with_its_learned_scale(ht):
    toks = as_tokens(ht, PROMPT)
    with torch.no_grad():
        logits0 = ht(toks)
        keys0 = list(ht.state_dict())
        assert FINAL not in ht.hook_dict
        assert final_hook_name(ht) == FINAL and FINAL in ht.hook_dict
        assert list(ht.state_dict()) == keys0  # parameter-free
        logits1, cache = ht.run_with_cache(
            toks, names_filter=[FINAL, "ln_final.hook_normalized", "unembed.hook_in"]
        )
    assert torch.equal(logits0, logits1)
    y = cache[FINAL][0]
    assert torch.equal(y, cache["unembed.hook_in"][0])
    ln = ht.ln_final
    manual = cache["ln_final.hook_normalized"][0] * ln.w + getattr(ln, "b", 0.0)
    torch.testing.assert_close(y, manual, rtol=0, atol=1e-6)
    # hook_normalized is taken BEFORE the learned scale: using it for y would be wrong
    assert (y - cache["ln_final.hook_normalized"][0]).abs().max() > 0.1
    torch.testing.assert_close(logits0[0], y @ ht.unembed.W_U + ht.unembed.b_U)
    assert compat.final_norm_scaled(ht)
    # also with return_type=None, where unembed.hook_in never fires
    with torch.no_grad():
        _, c2 = ht.run_with_cache(toks, names_filter=FINAL, return_type=None)
    assert torch.equal(c2[FINAL][0], y)


def test_adapter_idempotent_and_persistent(ht):
    toks = as_tokens(ht, PROMPT)
    assert tg.as_glasses_model(ht) is ht
    n_hooks = _n_torch_hooks(ht)
    tg.as_glasses_model(ht)
    final_hook_name(ht)
    assert _n_torch_hooks(ht) == n_hooks
    ht.reset_hooks(including_permanent=True)  # user clean-up leaves the adapter in place
    y = _y_reference(ht, toks)
    _, cache = ht.run_with_cache(toks, names_filter=FINAL)
    assert torch.equal(cache[FINAL][0], y)
    twin = copy.deepcopy(ht)
    _, c2 = twin.run_with_cache(toks, names_filter=FINAL)
    assert torch.equal(c2[FINAL][0], y)
    assert twin.ln_final.hook_out is not ht.ln_final.hook_out


def test_final_hook_takes_patches_and_gradients(ht):
    toks = as_tokens(ht, PROMPT)
    name = final_hook_name(ht)
    with torch.no_grad():
        out = ht.run_with_hooks(toks, fwd_hooks=[(name, lambda x, hook: torch.zeros_like(x))])
    torch.testing.assert_close(out, ht.unembed.b_U.expand_as(out))
    # backward hook on the final hook = gradient of the logit w.r.t. y = W_U[:, token]
    grads = []
    with hooks_context(ht, bwd_hooks=[(name, lambda g, hook: grads.append(g.detach()))]):
        logits = ht(toks)
        torch.autograd.grad(logits[0, -1, 7], ht.embed.W_E)
    torch.testing.assert_close(grads[0][0, -1], ht.unembed.W_U[:, 7])
    assert not grads[0][0, :-1].any()


def test_check_hooks_accepts_and_never_adapts_a_hooked_transformer(ht):
    check_hooks(ht, [FINAL, "blocks.1.attn.hook_pattern", "blocks.0.hook_resid_pre"])
    assert FINAL not in ht.hook_dict  # check_hooks reads; the capture engine adapts on use
    with pytest.raises(HookError, match="blocks.9.hook_resid_post"):
        check_hooks(ht, ["blocks.9.hook_resid_post"])


def test_folded_and_missing_final_norm(make_ht):
    # fold_ln models (LayerNormPre: no learned scale left): the hook holds the scale-free vector
    folded = make_ht(norm="LNPre")
    toks = as_tokens(folded, PROMPT)
    assert final_hook_name(folded) == FINAL and not compat.final_norm_scaled(folded)
    _, c = folded.run_with_cache(toks, names_filter=[FINAL, "ln_final.hook_normalized"])
    assert torch.equal(c[FINAL], c["ln_final.hook_normalized"])
    assert torch.equal(c[FINAL][0], _y_reference(folded, toks))
    # no final norm: the unembedding reads the last residual stream
    bare = make_ht(norm=None)
    name = final_hook_name(bare)
    assert name == "blocks.1.hook_resid_post" and compat.final_norm_scaled(bare)
    _, c = bare.run_with_cache(toks, names_filter=name)
    assert torch.equal(c[name][0], _y_reference(bare, toks))


def test_hook_map(ht):
    m = compat.hook_map(ht)
    assert m["final"] == FINAL
    L = ht.cfg.n_layers
    names = [v.format(l=L - 1) for k, v in m.items()]
    check_hooks(ht, names)


# ------------------------------------------- same weights: HookedTransformer vs bridge


def test_same_weights_same_hooks(triple):
    """The hook names tl_glasses reads hold the same values on a HookedTransformer and
    on a TransformerBridge with the same weights, and y is transformers' last hidden state."""
    hf, ht, bridge = triple
    toks = as_tokens(ht, PROMPT)
    assert torch.equal(toks, as_tokens(bridge, PROMPT))
    L = ht.cfg.n_layers
    names = [FINAL] + [f"blocks.{l}.{h}" for l in range(L) for h in
                       ("attn.hook_pattern", "attn.hook_z", "hook_resid_post")]
    names += ["blocks.0.hook_resid_pre"]
    before_ht, before_br = hook_snapshot(ht), hook_snapshot(bridge)
    with torch.no_grad():
        check_hooks(ht, names)
        check_hooks(bridge, names)
        final_hook_name(ht)  # check_hooks only reads: adapt before a direct run_with_cache
        lh, ch = ht.run_with_cache(toks, names_filter=names)
        lb, cb = bridge.run_with_cache(toks, names_filter=names)
        ref = hf(toks, output_hidden_states=True)
    torch.testing.assert_close(lh, ref.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(lb, ref.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(ch[FINAL], ref.hidden_states[-1], rtol=0, atol=1e-5)
    for n in names:
        torch.testing.assert_close(ch[n], cb[n], rtol=0, atol=1e-5, msg=n)
    assert hook_snapshot(ht) == before_ht and hook_snapshot(bridge) == before_br


# --------------------------------------------------------------------------- analysers

A, B = "1 1 1 1", "1 1 1 1 1"  # v and v* (its last item repeated)


def _last(model, prompt, names):
    """Full forward of one prompt; the last position of y (read at unembed.hook_in),
    of the logits and of ``names``: the independent reference."""
    toks = model.to_tokens(prompt)
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks, names_filter=list(names) + ["unembed.hook_in"])
    out = {n: cache[n][0, -1] for n in names}
    return cache["unembed.hook_in"][0, -1], logits[0, -1], out


def test_last_token_distance(ht):
    L = ht.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_post" for l in range(L)] + [f"blocks.{L - 1}.attn.hook_z"]
    ya, la, ca = _last(ht, A, names)
    yb, lb, cb = _last(ht, B, names)
    before = hook_snapshot(ht)
    r = tg.last_token_distance(ht, A, B)
    assert hook_snapshot(ht) == before
    d = (yb - ya).double()
    assert r.l2_measured == pytest.approx(float(d.norm()), rel=1e-6)
    assert r.linf_measured == pytest.approx(float(d.abs().max()), rel=1e-6)
    assert r.rel_measured == pytest.approx(float(d.norm() / ya.double().norm()), rel=1e-6)
    per_layer = [float((cb[n] - ca[n]).double().norm()) for n in names[:L]]
    assert r.per_layer_measured == pytest.approx(per_layer, rel=1e-6)
    z = names[-1]
    heads = (cb[z] - ca[z]).double().norm(dim=-1).tolist()
    assert r.heads_measured == pytest.approx(heads, rel=1e-6)
    tv = 0.5 * (torch.softmax(la.double(), -1) - torch.softmax(lb.double(), -1)).abs().sum()
    assert r.next_token_tv == pytest.approx(float(tv), rel=1e-6)
    assert (r.argmax_a, r.argmax_b) == (int(la.argmax()), int(lb.argmax()))
    assert not r.bitwise_equal and not r.below_floor
    # a and a: bitwise equal, distance 0
    same = tg.last_token_distance(ht, A, A)
    assert same.bitwise_equal and same.l2_measured == 0.0
    assert hook_snapshot(ht) == before


def test_last_token_distance_same_on_bridge(triple):
    hf, ht, bridge = triple
    rh, rb = tg.last_token_distance(ht, A, B), tg.last_token_distance(bridge, A, B)
    for f in ("l2_measured", "linf_measured", "rel_measured", "next_token_tv"):
        assert getattr(rh, f) == pytest.approx(getattr(rb, f), rel=1e-4, abs=1e-6), f
    assert rh.per_layer_measured == pytest.approx(rb.per_layer_measured, rel=1e-4, abs=1e-6)
    assert rh.heads_measured == pytest.approx(rb.heads_measured, rel=1e-4, abs=1e-6)
    assert hook_snapshot(ht) == {} and hook_snapshot(bridge) == {}


def test_patch_pair(ht):
    """Exact patching on a HookedTransformer against patches done by hand."""
    L, H = ht.cfg.n_layers, ht.cfg.n_heads
    ta, tb = ht.to_tokens(A), ht.to_tokens(B)
    ya, _, _ = _last(ht, A, [])
    yb, _, _ = _last(ht, B, [])
    m_a = float((ya - yb).double().norm())
    before = hook_snapshot(ht)
    r = tg.patch_pair(ht, A, B, sites=("resid_pre", "z"), positions="last", method="exact")
    assert hook_snapshot(ht) == before
    assert r.meta["metric_a"] == pytest.approx(m_a, rel=1e-6) and r.meta["metric_b"] == 0.0
    df = r.df
    assert len(df) == L + L * H
    with torch.no_grad():
        _, cache_b = ht.run_with_cache(tb, names_filter=lambda n: n.endswith(("hook_resid_pre", "hook_z")))
    for row in df.itertuples():
        name = (f"blocks.{row.layer}.hook_resid_pre" if row.site == "resid_pre"
                else f"blocks.{row.layer}.attn.hook_z")
        src = cache_b[name][0, -1]

        def put(x, hook, head=None if row.site == "resid_pre" else int(row.head), src=src):
            x = x.clone()
            if head is None:
                x[0, -1] = src
            else:
                x[0, -1, head] = src[head]
            return x

        out = {}

        def grab(x, hook):
            out["y"] = x[0, -1].clone()

        with torch.no_grad():
            ht.run_with_hooks(ta, fwd_hooks=[(name, put), ("unembed.hook_in", grab)])
        m = float((out["y"] - yb).double().norm())
        assert row.patched_metric == pytest.approx(m, rel=1e-5, abs=1e-6), row
        assert row.restored == pytest.approx((m - m_a) / (0.0 - m_a), rel=1e-5, abs=1e-6), row
    assert df.restored.abs().max() > 0.01  # the hand-made patches do move y
    assert hook_snapshot(ht) == before


def test_patch_pair_same_on_bridge(triple):
    hf, ht, bridge = triple
    kw = dict(sites=("resid_pre", "attn_out", "z"), positions="last")
    for method in ("exact", "attribution"):
        dh = tg.patch_pair(ht, A, B, method=method, **kw).df
        db = tg.patch_pair(bridge, A, B, method=method, **kw).df
        assert list(dh.site) == list(db.site) and list(dh.layer) == list(db.layer)
        torch.testing.assert_close(torch.tensor(dh.effect.to_numpy()), torch.tensor(db.effect.to_numpy()),
                                   rtol=1e-4, atol=1e-5, msg=method)
    assert hook_snapshot(ht) == {} and hook_snapshot(bridge) == {}


def _y_from_resid_pre(model, h0: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """y of every position from ``blocks.{layer}.hook_resid_pre`` = ``h0`` ([1, n, d]),
    by calling the blocks and the final norm directly (no hooks involved)."""
    x = h0
    for block in model.blocks[layer:]:
        x = block(x)
    return model.ln_final(x)


def test_sensitivity(ht):
    """Exact Jacobian norms against torch.autograd.functional.jacobian."""
    prompt = "12,3;1 1"
    toks = ht.to_tokens(prompt)
    with torch.no_grad():
        _, cache = ht.run_with_cache(toks, names_filter=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
    n = toks.shape[1]
    before = hook_snapshot(ht)
    r = tg.sensitivity(ht, prompt, wrt="all", method="jacobian")  # [layers, n]
    assert hook_snapshot(ht) == before
    assert r.meta["target"] == FINAL and r.values.shape == (2, n)
    for layer in (0, 1):
        h = cache[f"blocks.{layer}.hook_resid_pre"].detach()
        J = torch.autograd.functional.jacobian(lambda x: _y_from_resid_pre(ht, x, layer)[0, -1], h,
                                               vectorize=True)
        ref = J[:, 0].double().pow(2).sum(dim=(0, 2)).sqrt()  # [n]: ‖∂y_n/∂h_i‖_F
        assert ref.shape == (n,) and ref[0] > 0
        torch.testing.assert_close(r.values[layer].double(), ref, rtol=1e-4, atol=1e-6)
    # one scalar u·y_n: one backward, against the same Jacobian contracted with u
    u = torch.randn(ht.cfg.d_model, generator=torch.Generator().manual_seed(3))
    rs = tg.sensitivity(ht, prompt, method="scalar", metric=u)
    h = cache["blocks.0.hook_resid_pre"].detach()
    J = torch.autograd.functional.jacobian(lambda x: _y_from_resid_pre(ht, x)[0, -1], h, vectorize=True)
    ref_u = torch.einsum("d,dnk->nk", u, J[:, 0]).double().norm(dim=-1)
    torch.testing.assert_close(rs.values.double(), ref_u, rtol=1e-4, atol=1e-6)
    assert hook_snapshot(ht) == before
    assert all(p.grad is None for p in ht.parameters())


def test_sensitivity_same_on_bridge(triple):
    hf, ht, bridge = triple
    for kw in (dict(method="jacobian", wrt="all"), dict(method="scalar"),
               dict(method="hutchinson", probes=8, seed=1)):
        vh = tg.sensitivity(ht, A, **kw).values.double()
        vb = tg.sensitivity(bridge, A, **kw).values.double()
        torch.testing.assert_close(vh, vb, rtol=1e-4, atol=1e-6, msg=str(kw))
    assert hook_snapshot(ht) == {} and hook_snapshot(bridge) == {}


def test_collapse_sweep_same_on_bridge(triple):
    hf, ht, bridge = triple
    dh = tg.collapse_sweep(ht, "ones", [2, 6], progress=False).df
    db = tg.collapse_sweep(bridge, "ones", [2, 6], progress=False).df
    assert list(dh.n) == list(db.n) == [2, 6]
    torch.testing.assert_close(torch.tensor(dh.l2_measured.to_numpy()), torch.tensor(db.l2_measured.to_numpy()),
                               rtol=1e-4, atol=1e-6)
    # the reference: y at the last position of v and v*, read at unembed.hook_in
    for row in dh.itertuples():
        pair = tg.get_family("ones").pair(ht, int(row.n))
        ya = _y_reference(ht, as_tokens(ht, pair.a))[-1]
        yb = _y_reference(ht, as_tokens(ht, pair.b))[-1]
        assert row.l2_measured == pytest.approx(float((ya - yb).double().norm()), rel=1e-6)
    assert hook_snapshot(ht) == {} and hook_snapshot(bridge) == {}


def test_forward_accepts(triple):
    hf, ht, bridge = triple
    assert not compat.forward_accepts(ht, "position_ids")
    assert compat.forward_accepts(ht, "attention_mask")
    assert compat.forward_accepts(bridge, "position_ids")
    with pytest.raises(TypeError):
        ht(ht.to_tokens(A), position_ids=torch.arange(3)[None])


def _patterns(model, prompt):
    """Every layer's attention pattern [head, n, n] from run_with_cache, float64."""
    L = model.cfg.n_layers
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=names)
    return [cache[n][0].double() for n in names]


def _abar(A, variant, beta=1.0):
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    return {"bound": A / beta + eye, "rollout": (A + eye) / 2, "attention": A}[variant]


def test_path_bound(ht):
    prompt = "12,3;1 1 1"
    pats = _patterns(ht, prompt)
    before = hook_snapshot(ht)
    for variant, heads, beta in (("bound", "mean", 1.0), ("bound", "max", 2.5), ("rollout", "mean", 1.0),
                                 ("attention", "mean", 1.0)):
        r = tg.path_bound(ht, prompt, variant=variant, heads=heads, beta=beta)
        P = torch.eye(pats[0].shape[-1], dtype=torch.float64)
        for A in pats:  # the full n×n product, layer 0 first
            red = A.mean(0) if heads == "mean" else A.amax(0)
            P = _abar(red, variant, beta) @ P
        torch.testing.assert_close(r.values.double(), P[-1], rtol=1e-5, atol=1e-7,
                                   msg=f"{variant}/{heads}")
    assert hook_snapshot(ht) == before


def test_depth_profile(ht):
    prompt = "12,3;1 1 1"
    pats = _patterns(ht, prompt)
    before = hook_snapshot(ht)
    r = tg.depth_profile(ht, prompt)  # rollout (A + I)/2, head mean
    assert hook_snapshot(ht) == before
    P = torch.eye(pats[0].shape[-1], dtype=torch.float64)
    for layer, A in enumerate(pats):
        Ab = _abar(A.mean(0), "rollout")
        P = Ab @ P
        Pn = P / P.sum(-1, keepdim=True)
        torch.testing.assert_close(r.tensors["first_column"][layer].double(), Pn[:, 0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(r.tensors["eigenvalues"][layer].double(), torch.diagonal(Ab),
                                   rtol=1e-5, atol=1e-7)
        row = r.df.iloc[layer]
        assert row.first_token_mass == pytest.approx(float(Pn[-1, 0]), rel=1e-5)
        assert row.dist_inf == pytest.approx(float(2 * (1 - Pn[:, 0]).max()), rel=1e-5, abs=1e-7)


def test_paths_same_on_bridge(triple):
    hf, ht, bridge = triple
    prompt = "12,3;1 1 1"
    for variant in ("bound", "rollout"):
        torch.testing.assert_close(tg.path_bound(ht, prompt, variant=variant).values.double(),
                                   tg.path_bound(bridge, prompt, variant=variant).values.double(),
                                   rtol=1e-4, atol=1e-6)
    dh, db = tg.depth_profile(ht, prompt), tg.depth_profile(bridge, prompt)
    torch.testing.assert_close(dh.tensors["first_column"], db.tensors["first_column"], rtol=1e-4, atol=1e-6)
    assert hook_snapshot(ht) == {} and hook_snapshot(bridge) == {}


def test_sliding_window_same_on_bridge(triple):
    """A mitigation (hooks on hook_attn_scores) acts the same on both kinds of model,
    and it does act: the distance changes."""
    hf, ht, bridge = triple
    a, b = "1 1 1 1 1", "1 1 1 1 1 1"
    mit = tg.sliding_window(window=3)
    rh, rb = (tg.last_token_distance(m, a, b, mitigation=mit) for m in (ht, bridge))
    # (rotary llama: a 3-token window makes the last windows of v and v* identical, so
    # both distances drop to rounding noise, ~1e-6)
    assert rh.l2_measured == pytest.approx(rb.l2_measured, rel=1e-4, abs=1e-5)
    assert rh.l2_measured != pytest.approx(tg.last_token_distance(ht, a, b).l2_measured, rel=1e-3)
    assert hook_snapshot(ht) == {} and hook_snapshot(bridge) == {}
