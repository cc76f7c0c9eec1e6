"""Scale beyond one device (issue 9): smollm2-135m dispatched by accelerate over two
CPU "devices" — layers 0-19 in memory, 20-29 offloaded to disk (an offload folder) —
gives the same last-token distances and path bound as the plain model."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import tl_glasses as tg

pytestmark = pytest.mark.real

A = "1 1 1 1 1 1 1 1"
B = A + " 1"


def _device_map():
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" if i < 20 else "disk" for i in range(30)})
    return dm


def test_offloaded_model_matches_plain(smollm2, tmp_path):
    pytest.importorskip("accelerate")
    plain_d = tg.last_token_distance(smollm2, A, B, shift_floor=False)
    plain_p = tg.path_bound(smollm2, A)

    off = tg.load_model("smollm2-135m", device_map=_device_map(), offload_folder=str(tmp_path / "off"))
    # layers 20-29 are offloaded: their weights live on disk (meta tensors in memory,
    # loaded by accelerate's hooks layer by layer during the forward)
    on_meta = {n.split(".")[2] for n, q in off.named_parameters()
               if q.device.type == "meta" and n.startswith("model.layers.")}
    assert on_meta == {str(i) for i in range(20, 30)}, sorted(on_meta)
    assert set(off.original_model.hf_device_map.values()) == {"cpu", "disk"}
    d = tg.last_token_distance(off, A, B, shift_floor=False)
    p = tg.path_bound(off, A)
    # same weights, same eager kernels: the numbers agree (offload only moves weights)
    assert np.isclose(d.l2, plain_d.l2, rtol=1e-5, atol=1e-6)
    assert np.isclose(d.linf, plain_d.linf, rtol=1e-5, atol=1e-6)
    assert torch.allclose(p.tensors["values"], plain_p.tensors["values"], rtol=1e-5, atol=1e-7)
    del off
    gc.collect()
