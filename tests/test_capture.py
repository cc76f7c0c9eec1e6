"""The capture engine (tl_glasses.capture): hook hygiene on every path, stopping early,
logits_to_keep, the attention kernel choice, reads equal to run_with_cache, gradients
with respect to a hook, mitigations and user hooks composed, a pluggable backend, and a
check_hooks that only reads."""
from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import pytest
import torch

from tl_glasses import capture
from tl_glasses._core import FINAL, check_hooks, hook_snapshot
from tl_glasses.capture import Read
from tl_glasses.errors import GlassesError
from tl_glasses.interventions import Mitigation

TOKS = torch.tensor([[1, 5, 9, 2, 7, 3]])


def _resid(l: int) -> str:
    return f"blocks.{l}.hook_resid_post"


def test_hooks_removed_after_success_error_and_stop(tiny_llama):
    m = tiny_llama
    m.add_hook(_resid(0), lambda t, hook: None)  # the user's own hook stays throughout
    before = hook_snapshot(m)
    out = capture.run(m, TOKS, read=[_resid(0), FINAL], write=[(_resid(1), lambda t, hook: None)])
    assert set(out.acts) == {_resid(0), FINAL} and not out.stopped
    assert hook_snapshot(m) == before

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        capture.run(m, TOKS, read=[FINAL], write=[(_resid(1), boom)])
    assert hook_snapshot(m) == before
    with pytest.raises(ValueError, match="inside"):
        with capture.capturing(m, TOKS, read=[FINAL], grad=True):
            assert hook_snapshot(m) != before  # the snapshot sees the engine's hooks (it can fail)
            raise ValueError("inside the block")
    assert hook_snapshot(m) == before
    out = capture.run(m, TOKS, read=[_resid(0)], stop=True)
    assert out.stopped and hook_snapshot(m) == before
    m.reset_hooks()


def test_stop_skips_the_later_layers(tiny_llama):
    calls = []
    later = [(_resid(1), lambda t, hook: calls.append(hook.name))]
    capture.run(tiny_llama, TOKS, read=[_resid(0)], write=later, stop=True)
    assert calls == []  # the forward ended after blocks.0
    capture.run(tiny_llama, TOKS, read=[_resid(0)], write=later)
    assert len(calls) == 1
    with pytest.raises(GlassesError, match="stop=True"):
        capture.run(tiny_llama, TOKS, read=[_resid(0)], stop=True, logits=True)


def test_logits_to_keep_is_honoured(tiny_llama):
    m = tiny_llama
    assert capture.backend_for(m).supports_logits_to_keep(m)
    full = capture.run(m, TOKS, logits=True).logits
    assert full.shape[:2] == (1, TOKS.shape[1])
    seen = {}
    hf = m.original_model
    real = hf.forward

    @functools.wraps(real)  # keeps the signature the backend reads
    def spy(*a, **k):
        seen["keep"] = k.get("logits_to_keep")
        return real(*a, **k)

    hf.forward = spy
    try:
        three = capture.run(m, TOKS, logits=3).logits
        assert seen["keep"] == 3
        capture.run(m, TOKS, read=[FINAL])  # no logits wanted: the last position's only
        assert seen["keep"] == 1
    finally:
        del hf.forward
    assert three.shape[1] == 3
    torch.testing.assert_close(three, full[:, -3:], rtol=1e-5, atol=1e-6)
    assert capture.forward(m, TOKS, 2).shape[1] == 2


def test_eager_when_a_pattern_is_read(tiny_llama):
    m = tiny_llama
    assert capture.run(m, TOKS, read=["blocks.0.attn.hook_pattern"]).attn_impl == "eager"
    assert capture.run(m, TOKS, read=[_resid(0)]).attn_impl == "sdpa"
    assert capture.run(m, TOKS, read=[_resid(0)], attn_impl="eager").attn_impl == "eager"
    with pytest.raises(GlassesError, match="sdpa"):
        capture.run(m, TOKS, read=["blocks.1.attn.hook_pattern"], attn_impl="sdpa")


def test_reads_equal_run_with_cache(tiny_any):
    m = tiny_any
    names = [FINAL, _resid(0), "blocks.1.attn.hook_pattern", "blocks.0.hook_resid_pre"]
    with torch.no_grad():
        _, cache = m.run_with_cache(TOKS, names_filter=names)
    out = capture.run(m, TOKS, read=names, attn_impl="eager")
    for n in names:
        assert torch.equal(out.acts[n], cache[n]), n
    pos = torch.tensor([1, 4])
    some = capture.run(m, TOKS, read={FINAL: pos, _resid(0): [(0, 2), (0, -1)]}, attn_impl="eager").acts
    assert torch.equal(some[FINAL], cache[FINAL][:, pos])
    assert torch.equal(some[_resid(0)], cache[_resid(0)][0, [2, -1]])


def test_gradient_wrt_a_hook_equals_autograd(tiny_llama):
    m = tiny_llama
    wrt = "blocks.0.hook_resid_pre"
    with capture.capturing(m, TOKS, read={FINAL: Read(at=-1, graph=True)}, grad_wrt=[wrt], stop=True,
                           attn_impl="eager") as out:
        (g,) = torch.autograd.grad(out.acts[FINAL].sum(), out.wrt[wrt])
    assert out.leaf is out.wrt[wrt]
    # the definition: transformers' own model from its input embeddings (Llama: resid_pre = embeddings)
    hf = m.original_model
    x = hf.get_input_embeddings()(TOKS).detach().requires_grad_(True)
    y = hf.model(inputs_embeds=x).last_hidden_state[:, -1]
    (ref,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in m.parameters())


class _Shift(Mitigation):
    name = "shift"

    def __init__(self):
        self.patched = []

    def hooks(self, model):
        return [(_resid(0), lambda t, hook: t + 1.0)]

    @contextmanager
    def patch(self, model):
        self.patched.append("in")
        yield
        self.patched.append("out")


def test_mitigation_and_user_hooks_compose_before_the_reads(tiny_llama):
    m = tiny_llama
    base = capture.run(m, TOKS, read=[_resid(0)]).acts[_resid(0)]
    mit = _Shift()
    user = [(_resid(0), lambda t, hook: t * 2.0)]
    out = capture.run(m, TOKS, read=[_resid(0)], write=user, mitigation=mit)
    assert torch.equal(out.acts[_resid(0)], (base + 1.0) * 2.0)  # mitigation, then user, then the read
    assert mit.patched == ["in", "out"]


class _FakeModel:
    def __init__(self):
        self.cfg = SimpleNamespace(n_layers=1, n_heads=1, d_model=2, d_vocab=10, n_ctx=None)
        names = [FINAL, "blocks.0.hook_resid_post", "blocks.0.attn.hook_z"]
        self.hook_dict = {n: None for n in names}
        self.training = False


class _FakeBackend:
    name = "fake"

    def __init__(self):
        self.fwd, self.calls = [], 0

    def claims(self, model):
        return isinstance(model, _FakeModel)

    def check(self, model, names, purpose):
        assert all(n in model.hook_dict for n in names)

    def prepare(self, model, names):
        pass

    @contextmanager
    def hooks(self, model, fwd, bwd):
        self.fwd = list(fwd)
        yield
        self.fwd = []

    def attention(self, model, kernel):
        return nullcontext()

    def choose_attention(self, model, requested, names, eager_needed):
        return "eager"

    def supports_logits_to_keep(self, model):
        return False

    def forward(self, model, tokens, *, logits, position_ids, kwargs):
        self.calls += 1
        t = tokens.float()[..., None].repeat(1, 1, 2)
        for name in ["blocks.0.attn.hook_z", "blocks.0.hook_resid_post", FINAL]:
            for n, fn in self.fwd:
                if n == name:
                    r = fn(t, SimpleNamespace(name=n))
                    t = t if r is None else r
        return None if not logits else torch.zeros(tokens.shape[0], tokens.shape[1], 10)

    def cache(self, model, tokens, names, fwd):
        raise NotImplementedError


def test_a_registered_backend_runs_the_analysers_unchanged():
    from tl_glasses.analysis._probe import LastTokenProbe, run_capture

    fake = capture.register_backend(_FakeBackend())
    try:
        model = _FakeModel()
        assert capture.backend_for(model) is fake
        probe = LastTokenProbe(model, layers=True, heads="last")
        cap = run_capture(model, TOKS, probe, [(0, -1)], attn_impl="eager")
        assert fake.calls == 1 and fake.fwd == []
        assert cap.y.tolist() == [[3.0, 3.0]] and cap.logits.shape == (10,)
        with pytest.raises(GlassesError, match="already registered"):
            capture.register_backend(fake)
    finally:
        capture.unregister_backend(fake)
    with pytest.raises(GlassesError, match="no capture backend"):
        capture.backend_for(object())


def test_check_hooks_leaves_the_model_unchanged(tiny_llama):
    from test_compat import _mini

    names = [FINAL, "blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern"]
    keys, snap = list(tiny_llama.hook_dict), hook_snapshot(tiny_llama)
    check_hooks(tiny_llama, names)
    assert list(tiny_llama.hook_dict) == keys and hook_snapshot(tiny_llama) == snap
    # a TransformerLens 3.x-style HookedRootModule: ln_final.hook_out is accepted, not added
    m = _mini()
    keys, mods = list(m.hook_dict), [n for n, _ in m.named_modules()]
    check_hooks(m, [FINAL, "blocks.0.hook_resid_pre"])
    assert list(m.hook_dict) == keys and [n for n, _ in m.named_modules()] == mods
    assert not m.ln_final._forward_hooks
    # the engine adapts it when a run reads it (compat.as_glasses_model), numbers unchanged
    toks = torch.tensor([[1, 2, 3]])
    y = capture.run(m, toks, read=[FINAL]).acts[FINAL]
    assert FINAL in m.hook_dict
    torch.testing.assert_close(y, m.ln_final(m.blocks[1](m.blocks[0](m.embed(toks)))))
