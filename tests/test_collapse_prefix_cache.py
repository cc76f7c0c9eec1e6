"""The collapse step's shared-prefix key/value cache (``prefix_cache=True``), a fast path:
checked against plain transformers and against the two full forwards it replaces, its
verification and fallback, where it does not apply, and hook hygiene."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tl_glasses as tg
from tl_glasses import _fastpath
from tl_glasses._core import hook_snapshot
from tl_glasses.analysis import _distance as D
from tl_glasses.analysis import _prefix_cache as PC
from tl_glasses.analysis._probe import LastTokenProbe
from tl_glasses.models import tiny_hf_model

from test_collapse import _reference

A = "Count: 11111111."
B = "Count: 111111111."


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _prefix_checks(model):
    return [c for c in _fastpath.checks(model) if c.kind == "collapse prefix cache"]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_cached_pair_equals_plain_transformers(arch, attn_impl):
    kw = {"n_layers": 3} if arch == "gemma3" else {}
    model = tg.tiny_model(arch, seed=0, **kw)
    hf = tiny_hf_model(arch, **kw)
    hf.config._attn_implementation = attn_impl
    ta, tb = model.to_tokens(A), model.to_tokens(B)
    ca, cb, p = D._run_pair(model, ta, tb, LastTokenProbe(model), attn_impl=attn_impl, prefix_cache=True)
    assert ca.path == cb.path == "prefix cache" and p >= 2
    assert [c.ok for c in _prefix_checks(model)] == [True]
    for cap, toks in ((ca, ta), (cb, tb)):
        y, resid, heads, logits = _reference(hf, toks)
        assert _rel(cap.y[-1], y) < 1e-5
        assert _rel(cap.resid[-1], resid) < 1e-5
        assert _rel(cap.z[max(cap.z)][-1], heads) < 1e-5
        assert _rel(cap.logits, logits) < 1e-5
    # the distance through the cached path is the distance through two full forwards
    full = tg.last_token_distance(model, A, B, attn_impl=attn_impl)
    fast = tg.last_token_distance(model, A, B, attn_impl=attn_impl, prefix_cache=True)
    assert abs(fast.l2_measured - full.l2_measured) <= 1e-5 * max(full.norm_y, 1.0)
    assert np.allclose(fast.per_layer_measured, full.per_layer_measured, atol=1e-5 * max(full.norm_y, 1.0))


def test_beyond_the_native_window_is_its_own_regime():
    model = tg.tiny_model("gemma3", seed=0, n_layers=3)  # sliding window of 8 tokens
    hf = tiny_hf_model("gemma3", n_layers=3)
    hf.config._attn_implementation = "sdpa"
    a, b = "Count: " + "1" * 30 + ".", "Count: " + "1" * 31 + "."
    ta, tb = model.to_tokens(a), model.to_tokens(b)
    assert ta.shape[-1] > 8
    ca, cb, _ = D._run_pair(model, ta, tb, LastTokenProbe(model), prefix_cache=True)
    assert ca.path == "prefix cache"
    assert [c.regime for c in _prefix_checks(model)] == ["sdpa, beyond window"]
    for cap, toks in ((ca, ta), (cb, tb)):
        y, resid, _, _ = _reference(hf, toks)
        assert _rel(cap.y[-1], y) < 1e-5 and _rel(cap.resid[-1], resid) < 1e-5


def test_sweep_with_the_cache_equals_the_sweep_without(tmp_path):
    model = tg.tiny_model("llama", seed=0)
    kw = dict(lengths=[2, 5, 9], dtypes=["fp32", "bf16"], progress=False, shift_floor="ends")
    full = tg.collapse_sweep(model, "ones", out=tmp_path / "full", **kw).df
    fast = tg.collapse_sweep(model, "ones", out=tmp_path / "fast", prefix_cache=True, **kw).df
    assert "pair_path" not in full and (fast["pair_path"] == "prefix cache").all()
    key = ["n", "dtype", "mode", "mitigation"]
    full, fast = full.sort_values(key).reset_index(drop=True), fast.sort_values(key).reset_index(drop=True)
    f32 = full["dtype"] == "float32"
    scale = full.loc[f32, "norm_y"].to_numpy()
    assert np.allclose(fast.loc[f32, "l2_measured"], full.loc[f32, "l2_measured"], atol=1e-5 * scale.max())
    # bfloat16: the same tokens, rounded differently; the same answer to "collapsed?"
    assert (fast["bitwise_equal"] == full["bitwise_equal"]).all()
    import json

    assert json.loads((tmp_path / "fast" / "config.json").read_text())["prefix_cache"] is True
    assert "prefix_cache" not in json.loads((tmp_path / "full" / "config.json").read_text())


def test_a_cached_path_that_disagrees_is_never_used(monkeypatch, tmp_path):
    model = tg.tiny_model("llama", seed=0)
    real = PC.run_cached_tails

    def wrong(*a, **k):
        ca, cb = real(*a, **k)
        cb.y = cb.y + 1.0  # a cache that is off by a little
        return ca, cb

    monkeypatch.setattr(PC, "run_cached_tails", wrong)
    with pytest.warns(UserWarning, match="collapse prefix cache fast path prefix cache"):
        res = tg.collapse_sweep(model, "ones", [3, 6], progress=False, prefix_cache=True, out=tmp_path / "r")
    assert (res.df["pair_path"] == "full").all()
    assert [c.ok for c in _prefix_checks(model)] == [False]
    ref = tg.collapse_sweep(model, "ones", [3, 6], progress=False, out=tmp_path / "ref").df
    assert np.allclose(res.df.sort_values("n")["l2_measured"], ref.sort_values("n")["l2_measured"])


def test_hooks_and_model_edits_run_in_full(tmp_path):
    model = tg.tiny_model("gemma3", seed=0, n_layers=3)
    res = tg.collapse_sweep(model, "ones", [3, 12], progress=False, prefix_cache=True,
                            mitigations=["separators:3", "sliding_window:4"], out=tmp_path / "r").df
    path = res.groupby("mitigation")["pair_path"].agg(set).to_dict()
    assert path == {"none": {"prefix cache"}, "separators:3": {"prefix cache"}, "sliding_window:4": {"full"}}
    seen = []
    d = tg.last_token_distance(model, A, B, prefix_cache=True, shift_floor=False,
                               fwd_hooks=[("blocks.0.hook_resid_post", lambda t, hook: seen.append(t.shape[1]))])
    assert d.n_tokens_a > 2 and sorted(seen) == sorted([d.n_tokens_a, d.n_tokens_b])  # whole inputs: no cache


def test_hooks_are_removed_on_every_path(monkeypatch):
    model = tg.tiny_model("llama", seed=0)
    before = hook_snapshot(model)
    tg.last_token_distance(model, A, B, prefix_cache=True)
    assert hook_snapshot(model) == before

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(PC, "run_capture", boom)
    with pytest.raises(RuntimeError, match="boom"):
        PC.run_cached_tails(model, model.to_tokens(A), model.to_tokens(B), LastTokenProbe(model),
                            [(0, 5)], [(0, 6)], 4)
    assert hook_snapshot(model) == before


_MODEL = {}


def _llama():
    if "m" not in _MODEL:
        _MODEL["m"] = tg.tiny_model("llama", seed=1)
    return _MODEL["m"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.lists(st.integers(4, 100), min_size=2, max_size=20),
       tail_a=st.lists(st.integers(4, 100), min_size=0, max_size=4),
       tail_b=st.lists(st.integers(4, 100), min_size=1, max_size=4))
def test_property_cached_pair_is_the_full_pair(prefix, tail_a, tail_b):
    """Any two token sequences sharing ≥ 2 tokens: the cached pair captures what the two
    full forwards capture, at the last position and at the last shared one."""
    model = _llama()
    ta = torch.tensor([prefix + tail_a])
    tb = torch.tensor([prefix + tail_b])
    probe = LastTokenProbe(model)
    full = D._run_pair(model, ta, tb, probe)
    fast = D._run_pair(model, ta, tb, probe, prefix_cache=True)
    assert fast[2] == full[2] and fast[0].path == "prefix cache"
    for f, c in zip(full[:2], fast[:2]):
        assert f.index == c.index
        assert _rel(c.y, f.y) < 1e-5 and _rel(c.resid, f.resid) < 1e-5 and _rel(c.logits, f.logits) < 1e-5
