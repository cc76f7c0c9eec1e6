"""Hook hygiene (issue 9): every public analyser, once succeeding and once failing
mid-run because of a user hook that raises, leaves the model's hooks exactly as they
were (the user's hook still attached, the analyser's all gone), every .grad None, and
frees the model and its big tensors."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

import tl_glasses as tg
from tl_glasses._core import hook_snapshot

from _reliability_calls import calls

NAMES = list(calls(None))


class Boom(RuntimeError):
    pass


def _model():
    return tg.tiny_model("gemma3", n_layers=2, n_ctx=512, sliding_window=4)


def _check_clean(m, before):
    assert hook_snapshot(m) == before
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_hooks_grads_memory(name, tmp_path):
    m = _model()
    f = calls(tmp_path)[name]
    seen = []

    def user_hook(t, hook):  # a user's own, innocuous hook: must survive every call
        seen.append(hook.name)

    m.add_hook("blocks.0.hook_resid_post", user_hook)
    before = hook_snapshot(m)
    assert before, "the user hook is visible in the snapshot"

    res = f(m)
    _check_clean(m, before)
    assert seen, "the user's hook ran during the analysis"

    # failing mid-run: a user hook that raises at blocks.1.hook_resid_pre (fires in every
    # forward, also those the path analysers stop right after the last pattern)
    def raising(t, hook):
        raise Boom("user hook failed")

    m.add_hook("blocks.1.hook_resid_pre", raising)
    before_fail = hook_snapshot(m)
    with pytest.raises(Exception) as ei:
        f(m)
    assert isinstance(ei.value, Boom) or isinstance(ei.value.__cause__, Boom) \
        or "user hook failed" in str(ei.value) or isinstance(ei.value, tg.GlassesError), repr(ei.value)
    _check_clean(m, before_fail)

    # freed: model and result tensors unreachable once dropped
    refs = [weakref.ref(m)]
    big = [v for v in (getattr(res, "tensors", None) or {}).values() if isinstance(v, torch.Tensor)]
    refs += [weakref.ref(t) for t in big]
    refs += [weakref.ref(p) for p in list(m.parameters())[:3]]
    del m, res, big, f, ei
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} objects still alive: {[type(a).__name__ for a in alive]}"
