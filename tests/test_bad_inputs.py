"""The catalogue of bad inputs (issue 9): one test per entry, each asserting the
error's type (a GlassesError subclass) and the text that says what to do, and that
nothing half-written is left on disk where an output directory is involved.

docs/reliability.md lists the same entries with the messages they get."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tl_glasses as tg
from tl_glasses import errors as E
from tl_glasses.models import tiny_model


@pytest.fixture(scope="module")
def m():
    return tiny_model("llama", n_ctx=64)


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")} if d.exists() else set()


# 1
def test_empty_prompt(m):
    with pytest.raises(E.GlassesError, match="prompt is empty; pass a non-empty string"):
        tg.last_token_distance(m, "", "1")
    with pytest.raises(E.GlassesError, match="no tokens; pass a non-empty"):
        tg.path_bound(m, torch.zeros(0, dtype=torch.long))


# 2
def test_length_beyond_context(m):
    # to_tokens would silently truncate to n_ctx: as_tokens must refuse instead
    with pytest.raises(E.ContextLengthError, match=r"model's context is 64; use lengths of at most 64"):
        tg.last_token_distance(m, "1" * 80, "1" * 81)
    with pytest.raises(E.ContextLengthError, match="at most 64 tokens"):
        tg.sensitivity(m, torch.ones(65, dtype=torch.long))


# 3
@pytest.mark.parametrize("spec,msg", [
    ("0,4", "at least 1"),
    ([-3, 4], "at least 1"),
    ("32:8:4", "no lengths"),
    ("8:32:0", "write start:stop:step"),
])
def test_lengths_zero_negative_unsorted(spec, msg, tmp_path, m):
    from tl_glasses.analysis.collapse import parse_lengths

    with pytest.raises(E.GlassesError, match=msg):
        parse_lengths(spec)
    out = tmp_path / "sweep"
    with pytest.raises(E.GlassesError, match=msg):
        tg.collapse_sweep(m, "ones", spec, out=out, progress=False)
    assert not out.exists()
    # a list given out of order is sorted and de-duplicated (documented), not an error
    assert parse_lengths([8, 4, 8]) == [4, 8]


# 4
def test_pair_not_a_repeated_last_item(m):
    from tl_glasses.tasks.families import SequenceFamily

    # a family must build exactly n items, so that v* = v + its last item
    bad = SequenceFamily("bad", "{seq}", lambda n, seed: ["1"] * (n + 1))
    with pytest.raises(E.GlassesError, match="built 4 items for n=3"):
        bad.pair(m, 3)
    with pytest.raises(E.GlassesError, match="template must contain '{seq}' exactly once"):
        SequenceFamily("bad2", "no slot", lambda n, seed: ["1"] * n)


# 5
def test_tokenizer_merging_counted_items(m):
    from tl_glasses.tasks.families import template_family
    from tl_glasses.tasks.tokenization import tokenize_items

    # with the character tokenizer an item "11" is two tokens: it cannot be counted as one
    with pytest.raises(E.TokenizationError) as ei:
        tokenize_items(m, "count: {seq}", ["11", "11", "11"])
    assert "token" in str(ei.value)
    with pytest.raises(E.TokenizationError):
        tg.collapse_sweep(m, template_family("{seq}", item="11"), [3], progress=False)


# 6
def test_attention_not_hookable(m):
    # a model whose attention patterns cannot be captured (fused sdpa/flash kernels
    # expose no hook_pattern)
    L = m.cfg.n_layers

    class NoPattern(torch.nn.Module):
        """A model exposing hook points but no attention patterns."""

        def __init__(self, base):
            super().__init__()
            self.base = base
            self.cfg = base.cfg
            self.training = False
            self.hook_dict = {k: v for k, v in base.hook_dict.items() if "hook_pattern" not in k}

        def _resolve_hook_point(self, name, *_):
            if "hook_pattern" in name:
                raise KeyError(name)
            return self.hook_dict[name]

        def to_tokens(self, *a, **k):
            return self.base.to_tokens(*a, **k)

    with pytest.raises(E.HookError, match="eager attention"):
        tg.path_bound(NoPattern(m), "111")
    with pytest.raises(E.HookError, match="hook_pattern"):
        tg.depth_profile(NoPattern(m), "111")
    assert L == m.cfg.n_layers


def test_attention_not_hookable_real_sdpa_model_is_switched_to_eager():
    """The real case behind entry 6: a transformers model built with the fused ``sdpa``
    kernel (which computes no pattern). ``wrap_model`` switches it to eager attention, so
    ``hook_pattern`` fires and the path analysers get the same patterns as an eager model."""
    from tl_glasses.models import tiny_hf_model
    from tl_glasses.models._tiny import char_tokenizer

    patterns = {}
    for impl in ("eager", "sdpa"):
        hf = tiny_hf_model("llama", seed=0)
        hf.set_attn_implementation(impl)
        assert hf.config._attn_implementation == impl
        model = tg.wrap_model(hf, char_tokenizer(True))
        assert hf.config._attn_implementation == "eager"
        patterns[impl] = tg.path_bound(model, "1110111").tensors
    assert patterns["eager"]
    for k, v in patterns["eager"].items():
        torch.testing.assert_close(patterns["sdpa"][k], v, rtol=0, atol=0)


# 7
def test_training_mode(m):
    m.train()
    try:
        for f in (lambda: tg.path_bound(m, "11"), lambda: tg.sensitivity(m, "11"),
                  lambda: tg.last_token_distance(m, "1", "11"), lambda: tg.patch_pair(m, "1", "11")):
            with pytest.raises(E.GlassesError, match=r"training mode .* call model.eval\(\) first"):
                f()
    finally:
        m.eval()


# 8
def test_dtype_device_cannot_run(m, tmp_path):
    out = tmp_path / "d"
    with pytest.raises(E.GlassesError) as ei:
        tg.collapse_sweep(m, "ones", [2], dtypes=["float8_e4m3fn"], out=out, progress=False)
    assert "float32" in str(ei.value) or "bfloat16" in str(ei.value)
    assert not (out / "rows.jsonl").exists() or (out / "rows.jsonl").read_text() == ""
    # a dtype the device has no matrix product for is refused before any weight is read
    with pytest.raises(E.GlassesError, match=r"cannot run matrix products on device 'cpu'.*use torch.float32"):
        tg.load_model("smollm2-135m", dtype=torch.complex32)
    if not torch.cuda.is_available():
        with pytest.raises(E.GlassesError, match=r"cannot run matrix products on device 'cuda'.*another device"):
            tg.load_model("smollm2-135m", device="cuda")


# 9
def test_nan_in_activation_names_hook_and_layer(m):
    def poison(t, hook):
        t = t.clone()
        t[..., 0] = float("nan")
        return t

    m.add_hook("blocks.1.hook_resid_mid" if "blocks.1.hook_resid_mid" in m.hook_dict else "blocks.1.hook_attn_out",
               poison)
    try:
        for f in (lambda: tg.sensitivity(m, "111"), lambda: tg.last_token_distance(m, "11", "111")):
            with pytest.raises(E.NumericalError) as ei:
                f()
            msg = str(ei.value)
            assert "blocks.1." in msg, msg
            assert "float32" in msg or "bfloat16" in msg
    finally:
        m.reset_hooks()


# 10
@pytest.mark.parametrize("what", ["model", "family", "task", "mitigation", "metric", "method"])
def test_unknown_names_list_known_ones(what, m):
    from tl_glasses.interventions import as_mitigation

    f, known = {
        "model": (lambda: tg.load_model("no-such-model"), "smollm2-135m"),
        "family": (lambda: tg.get_family("nope"), "'ones'"),
        "task": (lambda: tg.get_task("nope"), "'count_ones'"),
        "mitigation": (lambda: as_mitigation("nope:3"), "'sliding_window'"),
        "metric": (lambda: tg.patch_pair(m, "11", "111", metric="nope"), "'final_distance'"),
        "method": (lambda: tg.sensitivity(m, "11", method="nope"), "'hutchinson'"),
    }[what]
    with pytest.raises(E.GlassesError) as ei:
        f()
    assert known in str(ei.value)
    if what != "model":
        assert isinstance(ei.value, E.UnknownNameError) and "known" in str(ei.value)


# 11
@pytest.mark.parametrize("w,msg", [(0, "at least 1"), (-4, "at least 1"), (10**6, "at most 64 keys")])
def test_window_out_of_range(w, msg, m):
    with pytest.raises(E.GlassesError, match=msg):
        tg.last_token_distance(m, "11", "111", mitigation=tg.sliding_window(w))


# 12
def test_results_dir_of_other_configuration(m, tmp_path):
    out = tmp_path / "sweep"
    tg.collapse_sweep(m, "ones", [2, 3], out=out, progress=False)
    before = {p: (out / p).read_bytes() for p in _files(out) if (out / p).is_file()}
    with pytest.raises(E.ResultsMismatchError, match=r"different configuration .*seed.*delete this one to start fresh"):
        tg.collapse_sweep(m, "ones", [2, 3], out=out, seed=1, progress=False)
    after = {p: (out / p).read_bytes() for p in _files(out) if (out / p).is_file()}
    assert before == after


# 13
def test_corrupt_rows_file(m, tmp_path):
    out = tmp_path / "sweep"
    tg.collapse_sweep(m, "ones", [2, 3, 4], out=out, progress=False)
    rows = (out / "rows.jsonl").read_text().splitlines()
    rows[1] = rows[1][: len(rows[1]) // 2]
    (out / "rows.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(E.CorruptResultsError, match=r"line 2 is corrupt .*delete .* to start fresh"):
        tg.collapse_sweep(m, "ones", [2, 3, 4], out=out, progress=False)


# 14
def test_truncated_saved_result(m, tmp_path):
    res = tg.path_bound(m, "1111")
    d = res.save(tmp_path / "r")
    pq = d / "data.parquet"
    pq.write_bytes(pq.read_bytes()[: pq.stat().st_size // 2])
    with pytest.raises(E.CorruptResultsError, match="corrupt or truncated .* delete it and rerun"):
        tg.Result.load(d)
    (d / "meta.json").write_text('{"class": ')
    with pytest.raises(E.CorruptResultsError, match="delete it and rerun"):
        tg.Result.load(d)


# 15
@pytest.mark.parametrize("which", ["path_bound", "sensitivity", "collapse_sweep"])
def test_memory_estimate_above_budget(which, m, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_GLASSES_MEMORY_BUDGET", "200K")
    out = tmp_path / "sweep"
    f = {
        "path_bound": lambda: tg.path_bound(m, "1" * 60),
        "sensitivity": lambda: tg.sensitivity(m, "1" * 60, method="jacobian"),
        "collapse_sweep": lambda: tg.collapse_sweep(m, "ones", [50], out=out, progress=False),
    }[which]
    with pytest.raises(E.MemoryBudgetError) as ei:
        f()
    msg = str(ei.value)
    assert "needs an estimated" in msg and "KiB available" in msg
    assert "the largest length that fits is about" in msg and "TL_GLASSES_MEMORY_BUDGET" in msg
    fit = int(msg.split("fits is about ")[1].split()[0])
    assert 0 < fit < 60
    assert not (out / "rows.jsonl").exists()
    monkeypatch.setenv("TL_GLASSES_MEMORY_BUDGET", "8G")
    f()  # the same call runs under a budget that fits


# 16
def test_cache_dir_not_writable(tmp_path, monkeypatch):
    from tl_glasses.models._cache import cache_root, ensure_writable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TL_GLASSES_CACHE", str(blocker / "cache"))  # a path under a file
    with pytest.raises(E.GlassesError, match=r"not writable .*export TL_GLASSES_CACHE="):
        ensure_writable(cache_root())
    with pytest.raises(E.GlassesError, match="TL_GLASSES_CACHE"):
        tg.load_model("smollm2-135m")
    assert blocker.read_text() == "x"
