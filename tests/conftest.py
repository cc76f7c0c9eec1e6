"""Shared fixtures: tiny models for logic, the embedded models for acceptance checks.

Real models are loaded once per session (they are cached as safetensors after the
first build). Every test starts from seeded RNGs.
"""
from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def _tiny(arch, **kw):
    import tl_glasses as tg

    return tg.tiny_model(arch, seed=0, **kw)


@pytest.fixture
def tiny_llama():
    return _tiny("llama")


@pytest.fixture
def tiny_gemma3():
    return _tiny("gemma3", n_layers=3)


@pytest.fixture
def tiny_gpt2():
    return _tiny("gpt2")


@pytest.fixture(params=["llama", "gemma3", "gpt2"])
def tiny_any(request):
    return _tiny(request.param, **({"n_layers": 3} if request.param == "gemma3" else {}))


_REAL: dict[str, object] = {}


def _real(name: str):
    import tl_glasses as tg

    if name not in _REAL:
        _REAL[name] = tg.load_model(name)
    return _REAL[name]


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as a TransformerBridge (fp32). Shared: do not mutate."""
    return _real("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    """Gemma 3 270M as a TransformerBridge (fp32). Shared: do not mutate."""
    return _real("gemma-3-270m")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: more torch threads only add contention on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
