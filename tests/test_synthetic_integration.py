"""The tl_glasses analysers (collapse, sensitivity, path products) run on the
SyntheticDecoder unchanged, and agree with computations done here independently
through the model's own hooks (and with the theory checks)."""
from __future__ import annotations

import pytest
import torch

import tl_glasses as tg
from tl_glasses._core import FINAL, hook_snapshot
from tl_glasses.synthetic import PE_NAMES, SyntheticDecoder
from tl_glasses.synthetic import theory as th


def _y_last(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=FINAL, return_type=None)
    return cache[FINAL][0, -1]


@pytest.mark.parametrize("pe", PE_NAMES)
def test_last_token_distance_matches_a_direct_computation(pe):
    m = SyntheticDecoder(pe, n_layers=2, seed=1)
    before = hook_snapshot(m)
    a, b = m.to_tokens("count: 1111111"), m.to_tokens("count: 11111111")
    r = tg.last_token_distance(m, a, b)
    ya, yb = _y_last(m, a), _y_last(m, b)
    assert r.l2_measured == pytest.approx(float((ya - yb).norm()), rel=1e-4, abs=1e-9)
    assert r.linf_measured == pytest.approx(float((ya - yb).abs().max()), rel=1e-4, abs=1e-9)
    assert r.bitwise_equal == torch.equal(ya, yb)
    assert hook_snapshot(m) == before and m.list_hooks() == {}


def test_last_token_distance_sees_the_bfloat16_collapse_of_the_theory_check():
    """Cor. B.10 measured by two implementations: the theory check's fast path and the
    collapse analyser's full forward agree on bitwise equality in bfloat16."""
    lengths = [256, 512, 1024]
    res = th.counting_precision(("alibi",), (torch.bfloat16,), lengths)
    m = SyntheticDecoder("alibi", n_layers=1, n_ctx=2048, dtype=torch.bfloat16)
    one = m.to_tokens("1")[0, 0].item()
    for n, expect in zip(lengths, res.df.sort_values("n").bitwise):
        a = torch.tensor([[1] + [one] * n])
        b = torch.tensor([[1] + [one] * (n + 1)])
        r = tg.last_token_distance(m, a, b, layers=False, heads=False)
        assert r.bitwise_equal == expect == True  # noqa: E712 (collapsed from n=181 on)


@pytest.mark.parametrize("pe", ["rope", "alibi"])
def test_collapse_sweep_runs_on_the_synthetic_model(pe):
    m = SyntheticDecoder(pe, n_layers=2)
    before = hook_snapshot(m)
    res = tg.collapse_sweep(m, "ones", lengths=[8, 32])
    assert len(res.df) == 2 and (res.df.status == "ok").all()
    assert res.df.l2_measured.notna().all()
    assert hook_snapshot(m) == before


def test_sensitivity_matches_autograd_jacobian():
    m = SyntheticDecoder("rope", n_layers=2, d_model=32, n_heads=4, dtype=torch.float64, seed=2)
    toks = m.to_tokens("0123456789")
    before = hook_snapshot(m)
    s = tg.sensitivity(m, toks, method="jacobian")
    assert hook_snapshot(m) == before

    _, cache = m.run_with_cache(toks, names_filter="blocks.0.hook_resid_pre")
    x0 = cache["blocks.0.hook_resid_pre"]

    def y_last(x):
        out = {}
        with m.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: x),
                                (FINAL, lambda t, hook: out.setdefault("y", t))]):
            m(toks, return_type=None)
        return out["y"][0, -1]

    J = torch.autograd.functional.jacobian(y_last, x0)  # [d_model, 1, n, d_model]
    ref = J[:, 0].permute(1, 0, 2).flatten(1).norm(dim=-1)
    assert torch.allclose(s.values.double(), ref, rtol=1e-6, atol=1e-9)
    assert m.list_hooks() == {}


def test_sensitivity_hutchinson_and_scalar_run_on_every_pe():
    for pe in PE_NAMES:
        m = SyntheticDecoder(pe, n_layers=2)
        s = tg.sensitivity(m, "0123456789", method="hutchinson", probes=16)
        assert s.values.shape == (10,) and torch.isfinite(s.values).all()
        g = tg.sensitivity(m, "0123456789", method="scalar")
        assert (g.values >= 0).all()
        assert m.list_hooks() == {}


def test_path_bound_matches_the_depth_check_product():
    """path_bound's last-row chain (rollout: (A+I)/2) equals the last row of the full
    product formed by the theory check's attention_product from the same patterns."""
    m = SyntheticDecoder("none", n_layers=6, d_model=32, n_heads=4, init_std=1.0, dtype=torch.float64)
    toks = torch.randint(4, 128, (1, 24), generator=torch.Generator().manual_seed(0))
    r = tg.path_bound(m, toks, variant="rollout", heads="mean")
    _, cache = m.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_pattern"))
    mats = [cache[f"blocks.{l}.attn.hook_pattern"][0].mean(0) for l in range(6)]
    *_, P = th.attention_product(mats, residual=True)
    assert torch.allclose(torch.as_tensor(r.values).double(), P[-1], atol=1e-10)
    assert m.list_hooks() == {}
