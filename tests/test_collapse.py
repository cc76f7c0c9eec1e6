"""Representational collapse on tiny models: the primitive against plain transformers,
noise floors, the sweep result, resume, and hook hygiene."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import tl_glasses as tg
from tl_glasses._core import hook_snapshot
from tl_glasses.analysis._fused import fused_attention
from tl_glasses.analysis.collapse import CollapseResult, derive_reported, parse_lengths
from tl_glasses.errors import GlassesError, HookError
from tl_glasses.models import tiny_hf_model

A = "Count: 11111111."
B = "Count: 111111111."


def _reference(hf, toks):
    """y, per-layer resid_post, last-layer per-head z and logits at the last position,
    from plain transformers (hidden states, forward hooks on the decoder layers and
    the output projection's input)."""
    layers = hf.model.layers
    outs, z = [], {}
    hs = [l.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o)) for l in layers]
    hs.append(layers[-1].self_attn.o_proj.register_forward_pre_hook(lambda m, i: z.update(z=i[0])))
    try:
        with torch.no_grad():
            o = hf(toks, output_hidden_states=True)
    finally:
        for h in hs:
            h.remove()
    y = o.hidden_states[-1][0, -1]
    resid = torch.stack([t[0, -1] for t in outs])
    heads = z["z"][0, -1].reshape(hf.config.num_attention_heads, -1)
    return y, resid, heads, o.logits[0, -1]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_distance_equals_plain_transformers(arch, attn_impl):
    kw = {"n_layers": 3} if arch == "gemma3" else {}
    model = tg.tiny_model(arch, **kw)
    hf = tiny_hf_model(arch, **kw)
    hf.config._attn_implementation = attn_impl
    ta, tb = model.to_tokens(A), model.to_tokens(B)
    d = tg.last_token_distance(model, A, B, attn_impl=attn_impl)
    ya, ra, za, la = _reference(hf, ta)
    yb, rb, zb, lb = _reference(hf, tb)
    tol = 1e-5 * float(ya.norm())
    diff = (yb - ya).double()
    assert abs(d.l2_measured - float(diff.norm())) <= tol
    assert abs(d.linf_measured - float(diff.abs().max())) <= tol
    assert abs(d.rel_measured - float(diff.norm() / ya.double().norm())) <= 1e-5
    assert np.allclose(d.per_layer_measured, (rb - ra).double().norm(dim=-1).numpy(), atol=tol)
    heads = (zb - za).double().norm(dim=-1).numpy()
    assert math.isclose(d.head_mean, heads.mean(), abs_tol=tol)
    assert math.isclose(d.head_min, heads.min(), abs_tol=tol)
    assert math.isclose(d.head_max, heads.max(), abs_tol=tol)
    assert d.same_argmax == (int(la.argmax()) == int(lb.argmax()))
    tv = 0.5 * (torch.softmax(la.double(), -1) - torch.softmax(lb.double(), -1)).abs().sum()
    assert math.isclose(d.next_token_tv, float(tv), abs_tol=1e-6)
    assert d.bitwise_equal is False and d.attn_impl == attn_impl
    # same kernel: bit for bit
    assert torch.equal(d.y_a, ya) and torch.equal(d.y_b, yb)
    assert d.n_tokens_a == ta.shape[-1] and not d.below_floor


def test_token_tensors_are_used_as_given(tiny_llama):
    ta = tiny_llama.to_tokens(A, prepend_bos=False)
    tb = tiny_llama.to_tokens(B, prepend_bos=False)
    d = tg.last_token_distance(tiny_llama, ta[0], tb)
    assert d.n_tokens_a == len(A) and d.n_tokens_b == len(B)
    d2 = tg.last_token_distance(tiny_llama, A, B)
    assert d2.n_tokens_a == len(A) + 1  # strings: BOS prepended, as model.to_tokens does


def test_round_estimate_is_rounding(tiny_llama):
    d32 = tg.last_token_distance(tiny_llama, A, B)
    dbf = tg.last_token_distance(tiny_llama, A, B, round_to="bf16")
    ya, yb = d32.y_a.to(torch.bfloat16), d32.y_b.to(torch.bfloat16)
    assert dbf.mode == "round" and dbf.dtype == "bfloat16"
    assert math.isclose(dbf.l2_measured, float((yb.double() - ya.double()).norm()), rel_tol=1e-12)
    assert dbf.bitwise_equal == torch.equal(ya, yb)
    assert dbf.eps == 2.0 ** -7


def test_within_noise_floor_is_never_a_distance(tiny_llama):
    """With a 2-key window everywhere, the last token of v and v* sees the same two
    tokens at the same relative positions: equal in exact arithmetic. What is measured
    is rounding noise of the position shift, and must be reported as such."""
    d = tg.last_token_distance(tiny_llama, A, B, mitigation=tg.sliding_window(2))
    assert d.l2_measured > 0  # the kernels do round differently…
    assert d.below_floor  # …but not by more than the floor
    assert math.isnan(d.l2) and math.isnan(d.rel) and math.isnan(d.linf)
    assert "noise floor" in repr(d)
    assert not math.isnan(d.noise_shift_l2)
    far = tg.last_token_distance(tiny_llama, A, B)
    assert not far.below_floor and far.l2 == far.l2_measured


def test_noise_floor_function(tiny_gemma3):
    fl = tg.analysis.collapse.noise_floor(tiny_gemma3, A)
    assert set(fl) >= {"append_l2", "batch_l2", "shift_l2", "norm_y"}
    assert all(v >= 0 and math.isfinite(v) for v in fl.values())
    assert fl["shift_l2"] < 1e-4 * fl["norm_y"]


def test_fused_path_restores_everything(tiny_gemma3):
    cfg = tiny_gemma3.original_model.config
    before = cfg._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with fused_attention(tiny_gemma3):
            assert cfg._attn_implementation == "sdpa"
            raise RuntimeError("boom")
    assert cfg._attn_implementation == before
    assert all("forward" not in b.attn.__dict__ for b in tiny_gemma3.blocks)
    with pytest.raises(GlassesError, match="sdpa"):
        tg.last_token_distance(tiny_gemma3, A, B, attn_impl="sdpa", mitigation=tg.sliding_window(2))


def test_hooks_are_removed_after_every_call(tiny_gemma3):
    snap = hook_snapshot(tiny_gemma3)
    tg.last_token_distance(tiny_gemma3, A, B, mitigation=tg.sliding_window(3) + tg.global_attention())

    def boom(t, hook):
        raise RuntimeError("user hook failed")

    with pytest.raises(RuntimeError, match="user hook failed"):
        tg.last_token_distance(tiny_gemma3, A, B, fwd_hooks=[("blocks.1.hook_resid_post", boom)])
    assert hook_snapshot(tiny_gemma3) == snap
    with pytest.raises(HookError):
        tg.last_token_distance(tiny_gemma3, A, B, mitigation=tg.sliding_window(3),
                               hooks=[("blocks.0.attn.hook_attn_scores", lambda t, hook: t.clone() * 0 + 1)])
    assert hook_snapshot(tiny_gemma3) == snap
    tg.collapse_sweep(tiny_gemma3, "ones", [2, 3], mitigations=["global_attention"], progress=False)
    assert hook_snapshot(tiny_gemma3) == snap
    assert all(not b.attn._forward_pre_hooks for b in tiny_gemma3.blocks)
    assert all("forward" not in b.attn.__dict__ for b in tiny_gemma3.blocks)


def test_probe_from_cache(tiny_llama):
    probe = tg.LastTokenProbe(tiny_llama)
    toks = tiny_llama.to_tokens(A)
    _, cache = tiny_llama.run_with_cache(toks, names_filter=lambda n: n in set(probe.names))
    cap = probe.from_cache(cache)
    d = tg.last_token_distance(tiny_llama, A, B, attn_impl="eager")
    assert torch.equal(cap.y[0], d.y_a)
    assert cap.resid.shape == (1, 2, 32) and cap.z[1].shape == (1, 4, 8)


def test_sweep_rows_and_result(tiny_gemma3, tmp_path):
    res = tg.collapse_sweep(
        tiny_gemma3, "ones", [2, 5, 9], dtypes=["fp32", "bf16"], round_to=["fp16"],
        mitigations=["separators:3", "sliding_window:4"], out=tmp_path / "r", progress=False,
    )
    df = res.df
    # 3 lengths x 3 arms x (fp32 native, bf16 native, fp16 round)
    assert len(df) == 27 and not df.duplicated(["n", "dtype", "mode", "mitigation"]).any()
    assert set(df["mode"]) == {"native", "round"}
    assert set(df.loc[df["mode"] == "round", "dtype"]) == {"float16"}
    assert (df["status"] == "ok").all()
    # reported distances are NaN exactly where below the floor
    assert (df["below_floor"] == df["l2"].isna()).all()
    assert set(df["attn_impl"]) == {"sdpa", "eager"}  # the window needs the eager path
    assert df.loc[df["mitigation"] == "sliding_window:4", "attn_impl"].eq("eager").all()
    loaded = tg.Result.load(tmp_path / "r")
    assert isinstance(loaded, CollapseResult) and len(loaded.df) == 27
    assert loaded.collapse_table().shape[0] == 9
    fig = loaded.plot()
    assert fig.axes and fig.axes[0].get_yscale() == "log"
    fig2 = loaded.plot(metric="l2", dtype="fp32")
    assert fig2.axes
    assert "family 'ones'" in loaded.summary()


def test_sweep_resumes_and_extends(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "s"
    tg.collapse_sweep(tiny_llama, "ones", [2, 4], out=out, progress=False, shift_floor="none")
    calls = []
    import tl_glasses.analysis.collapse as col

    real = col._run_pair
    monkeypatch.setattr(col, "_run_pair", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = tg.collapse_sweep(tiny_llama, "ones", [2, 4, 6], out=out, progress=False, shift_floor="none")
    assert len(calls) == 1 and sorted(res.df["n"]) == [2, 4, 6]
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 3
    with pytest.raises(GlassesError, match="different configuration"):
        tg.collapse_sweep(tiny_llama, "ones", [2], out=out, level="token", progress=False)


def _result(rows):
    base = dict(dtype="float32", mode="native", mitigation="none", status="ok", l2_measured=1.0,
                linf_measured=1.0, rel_measured=0.1, head_mean_measured=1.0, head_min_measured=1.0,
                head_max_measured=1.0, floor_factor=2.0, noise_l2=0.0, noise_linf=0.0, noise_head=0.0)
    return CollapseResult(df=derive_reported(pd.DataFrame([dict(base, **r) for r in rows])), meta={})


def test_collapse_length_definition():
    eq = lambda n, b, a=None: dict(n=n, bitwise_equal=b, same_argmax=b if a is None else a)  # noqa: E731
    r = _result([eq(1, False), eq(2, True), eq(3, False), eq(4, True), eq(5, True, True)])
    assert r.collapse_length() == 4  # from 4 on it stays collapsed; 2 is a blip
    assert r.collapse_length(criterion="argmax") == 4
    r = _result([eq(1, True), eq(2, False)])
    assert r.collapse_length() is None  # not collapsed at the end of the range
    r = _result([eq(1, False, True), eq(2, False, True)])
    assert r.collapse_length() is None and r.collapse_length(criterion="argmax") == 1


def test_floor_filling_between_measured_lengths():
    rows = [dict(n=n, bitwise_equal=False, same_argmax=True, l2_measured=l2, noise_shift_l2=s)
            for n, l2, s in [(1, 1.0, 0.1), (2, 0.15, float("nan")), (3, 0.5, 0.05), (4, 0.5, float("nan"))]]
    df = _result(rows).df
    assert df["floor_shift_filled"].tolist() == [False, True, False, True]
    assert df["floor_l2"].tolist() == [0.1, 0.1, 0.05, 0.05]
    assert df["below_floor"].tolist() == [False, True, False, False]


def test_parse_lengths():
    assert parse_lengths("8:32:8") == [8, 16, 24, 32]
    assert parse_lengths("3,1,2,2") == [1, 2, 3]
    assert parse_lengths(range(2, 5)) == [2, 3, 4]
    with pytest.raises(GlassesError):
        parse_lengths("0:4")


def test_native_low_precision_runs(tiny_llama):
    res = tg.collapse_sweep(tiny_llama, "ones", [3], dtypes=["fp16", "bf16", "fp64"], progress=False,
                            shift_floor="none", batch_floor="none")
    assert sorted(res.df["dtype"]) == ["bfloat16", "float16", "float64"]
    assert (res.df["mode"] == "native").all()
    eps = dict(zip(res.df["dtype"], res.df["eps"]))
    assert eps["float16"] == 2.0 ** -10 and eps["bfloat16"] == 2.0 ** -7 and eps["float64"] == 2.0 ** -52
    assert tiny_llama.cfg.dtype == torch.float32 or next(tiny_llama.parameters()).dtype == torch.float32
    with pytest.raises(GlassesError, match="bfloat16"):
        tg.collapse_sweep(tiny_llama, "ones", [3], dtypes=["bf16"], models={"bf16": tiny_llama}, progress=False)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_every_hook_allowed_on_the_fused_path_fires(arch):
    """The fused (sdpa) path is chosen only for hooks it still fires."""
    import warnings

    from tl_glasses.analysis._fused import FUSED_OK_HOOKS, needs_eager

    model = tg.tiny_model(arch, n_layers=3)
    names = [n for n in model.hook_dict if FUSED_OK_HOOKS.match(n) and "mlp_in" not in n]
    assert not needs_eager(names) and needs_eager(["blocks.0.attn.hook_pattern"])
    fired = set()
    hooks = [(n, (lambda name: (lambda t, hook: fired.add(name)))(n)) for n in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TransformerLens lists gated-off names
        with torch.no_grad(), fused_attention(model), model.hooks(fwd_hooks=hooks):
            model(model.to_tokens(A))
    assert set(names) == fired
