"""Acceptance on the embedded models: last_token_distance equals an independent
computation from the plain (unwrapped) transformers model of the same weights —
within 1e-5·‖y‖ in float32, bit for bit when both use the same attention kernel."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tl_glasses as tg
from tl_glasses._core import hook_snapshot
from tl_glasses.models import load_hf
from tl_glasses.tasks.families import get_family

pytestmark = pytest.mark.real

_HF: dict[str, object] = {}


def _hf(name):
    if name not in _HF:
        _HF.clear()  # one plain model in memory at a time
        _HF[name] = load_hf(name)[0]
    return _HF[name]


def _plain(hf, toks, impl):
    hf.config._attn_implementation = impl
    with torch.no_grad():
        o = hf(toks, output_hidden_states=True)
    hs = o.hidden_states  # embeddings, layers 0..L-2, final norm output
    return hs[-1][0, -1], torch.stack([h[0, -1] for h in hs[1:-1]]), o.logits[0, -1]


@pytest.mark.parametrize("fixture,name", [("smollm2", "smollm2-135m"), ("gemma", "gemma-3-270m")])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_matches_plain_transformers(request, fixture, name, impl):
    model = request.getfixturevalue(fixture)
    hf = _hf(name)
    pair = get_family("ones").pair(model, 40)
    ta, tb = pair.a[None], pair.b[None]
    snap = hook_snapshot(model)
    d = tg.last_token_distance(model, ta, tb, attn_impl=impl)
    assert hook_snapshot(model) == snap
    assert d.attn_impl == impl
    ya, ra, la = _plain(hf, ta, impl)
    yb, rb, lb = _plain(hf, tb, impl)
    tol = 1e-5 * float(ya.norm())
    assert float((d.y_a - ya).abs().max()) <= tol and float((d.y_b - yb).abs().max()) <= tol
    diff = (yb - ya).double()
    assert abs(d.l2_measured - float(diff.norm())) <= tol
    assert abs(d.linf_measured - float(diff.abs().max())) <= tol
    assert abs(d.rel_measured - float(diff.norm() / ya.double().norm())) <= 1e-5
    L = model.cfg.n_layers
    per_layer = (rb - ra).double().norm(dim=-1).numpy()
    assert np.allclose(d.per_layer_measured[: L - 1], per_layer, rtol=1e-5,
                       atol=1e-5 * float(ra.norm(dim=-1).max()))
    assert d.same_argmax == (int(la.argmax()) == int(lb.argmax()))
    tv = 0.5 * (torch.softmax(la.double(), -1) - torch.softmax(lb.double(), -1)).abs().sum()
    assert math.isclose(d.next_token_tv, float(tv), abs_tol=1e-5)
    # same attention kernel on both sides: identical bits
    assert torch.equal(d.y_a, ya) and torch.equal(d.y_b, yb)
    assert not d.below_floor and len(d.heads_measured) == model.cfg.n_heads


def test_prefix_cache_matches_plain_transformers_beyond_the_window(gemma):
    """The shared-prefix cache on Gemma 3 past its 512-token local window: the same
    representations as plain transformers' full forwards of each sequence."""
    from tl_glasses import _fastpath

    hf = _hf("gemma-3-270m")
    pair = get_family("ones").pair(gemma, 560)
    ta, tb = pair.a[None], pair.b[None]
    assert ta.shape[-1] > 512
    snap = hook_snapshot(gemma)
    d = tg.last_token_distance(gemma, ta, tb, attn_impl="sdpa", prefix_cache=True, shift_floor=False)
    assert hook_snapshot(gemma) == snap
    assert any(c.kind == "collapse prefix cache" and c.regime == "sdpa, beyond window" and c.ok
               for c in _fastpath.checks(gemma))
    ya, _, la = _plain(hf, ta, "sdpa")
    yb, _, lb = _plain(hf, tb, "sdpa")
    tol = 1e-5 * float(ya.norm())
    assert float((d.y_a - ya).abs().max()) <= tol and float((d.y_b - yb).abs().max()) <= tol
    assert abs(d.l2_measured - float((yb - ya).double().norm())) <= tol
