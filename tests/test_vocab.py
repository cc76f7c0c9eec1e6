"""The shared vocabulary (tl_glasses._vocab) and the renamed keywords (issue 14, items 3 and 5)."""
import pytest
import torch

import tl_glasses as tg
from tl_glasses import _vocab as V
from tl_glasses.errors import GlassesError


def test_one_final_constant():
    from tl_glasses import _core, compat

    assert _core.FINAL is V.FINAL and compat.FINAL is V.FINAL == "ln_final.hook_out"


def test_model_name(tiny_llama):
    class M:
        cfg = type("C", (), {"model_name": "cfg-name"})()

    m = M()
    assert V.model_name(m) == "cfg-name"
    m.tl_glasses_info = {"name": "loaded-name"}
    assert V.model_name(m) == "loaded-name"
    assert V.model_name(object()) == "object"
    assert isinstance(V.model_name(tiny_llama), str)


def test_dtypes():
    for s in ("fp32", "float32", "torch.float32", "FP32", torch.float32):
        assert V.parse_dtype(s) is torch.float32
    assert V.parse_dtype("bf16") is torch.bfloat16 and V.parse_dtype("half") is torch.float16
    assert V.dtype_name(torch.bfloat16) == "bfloat16" and V.dtype_name("fp64") == "float64"
    with pytest.raises(GlassesError):
        V.parse_dtype("fp8x")
    from tl_glasses.analysis._distance import _dtype, dtype_name
    from tl_glasses.models import resolve_dtype
    from tl_glasses.synthetic._theory_base import _dname, _dtype as theory_dtype

    assert _dtype is V.parse_dtype and dtype_name is V.dtype_name and _dname is V.dtype_name
    assert resolve_dtype("double") is torch.float64 and theory_dtype("fp16") is torch.float16


def test_layer_spec():
    assert V.parse_layer_spec("0-4,7") == [0, 1, 2, 3, 4, 7]
    assert V.parse_layer_spec("-3--1, 2") == [-3, -2, -1, 2]
    assert V.parse_layer_spec(3) == [3] and V.parse_layer_spec([1, "2-3"]) == [1, 2, 3]
    assert V.parse_layer_spec(None) is None and V.parse_layer_spec("all") is None
    for bad in ("a", "1-x", [1.5], [True]):
        with pytest.raises(GlassesError):
            V.parse_layer_spec(bad)


def test_parse_layers(tiny_llama):
    L = tiny_llama.cfg.n_layers
    assert V.parse_layers(tiny_llama, None) == list(range(L))
    assert V.parse_layers(tiny_llama, "0-1") == V.parse_layers(tiny_llama, [1, 0, 1]) == [0, 1]
    assert V.parse_layers(tiny_llama, -1) == [L - 1]
    with pytest.raises(GlassesError, match="out of range"):
        V.parse_layers(tiny_llama, L)
    with pytest.raises(GlassesError, match="no layers"):
        V.parse_layers(tiny_llama, [])
    assert V.parse_layers(tiny_llama, [], allow_empty=True) == []
    from tl_glasses.interventions import parse_layers

    assert parse_layers(tiny_llama, "0", what="x") == [0]


def test_one_length_grammar():
    from tl_glasses.analysis.collapse import parse_lengths as col
    from tl_glasses.tasks.generators import parse_lengths as gen

    assert col is gen is V.parse_lengths
    # what the collapse grammar read
    assert col("8:32:8") == [8, 16, 24, 32] and col("3,1,2,2") == [1, 2, 3] and col(range(2, 5)) == [2, 3, 4]
    assert col("4:6") == [4, 5, 6] and col(" 8 : 16 : 8 ") == [8, 16]
    # what the tasks grammar read
    assert col("2:10:4,3") == [2, 3, 6, 10] and col(8) == [8] and col("2,5,10") == [2, 5, 10]
    for spec, msg in [("0,4", "at least 1"), ([-3, 4], "at least 1"), ("32:8:4", "no lengths"),
                      ("8:32:0", "write start:stop:step"), ("a,b", "cannot read"), ("", "no lengths"),
                      (None, "cannot read"), ("1:2:3:4", "start:stop:step")]:
        with pytest.raises(GlassesError, match=msg):
            col(spec)


def test_single_token_and_strings(tiny_llama):
    tok = tiny_llama.tokenizer
    i = tok.encode("1", add_special_tokens=False)[0]
    assert V.single_token(tiny_llama, "1") == i and V.single_token(tiny_llama, 7) == 7
    with pytest.raises(GlassesError):
        V.single_token(tiny_llama, 1.5)
    ids = tok.encode("a 1", add_special_tokens=False)
    strs = V.token_strings(tiny_llama, torch.tensor(ids))
    assert strs == [tok.decode([j]) for j in ids] and "".join(strs).replace(" ", "") == "a1"
    assert V.token_strings(None, [3, 4]) == ["3", "4"]
    from tl_glasses.analysis._sensitivity_result import token_strings as sens
    from tl_glasses.tasks.tokenization import token_strings as tasks

    assert sens(tiny_llama, torch.tensor(ids)) == tasks(tiny_llama, ids) == strs


def test_hooks_is_renamed_fwd_hooks(tiny_llama):
    seen = []

    def spy(x, hook):
        seen.append(hook.name)

    hook = [("blocks.0.hook_resid_post", spy)]
    with pytest.warns(DeprecationWarning, match="fwd_hooks"):
        old = tg.last_token_distance(tiny_llama, "a b c", "a b d", hooks=hook, shift_floor=False)
    n_old = len(seen)
    assert n_old > 0
    new = tg.last_token_distance(tiny_llama, "a b c", "a b d", fwd_hooks=hook, shift_floor=False)
    assert len(seen) == 2 * n_old and old.l2 == new.l2
    with pytest.raises(GlassesError):
        tg.last_token_distance(tiny_llama, "a", "b", hooks=hook, fwd_hooks=hook)
    with pytest.raises(TypeError):
        tg.last_token_distance(tiny_llama, "a", "b", no_such_option=1)


def test_progress_defaults_are_true():
    import inspect

    from tl_glasses.analysis.oversquashing import copy_study
    from tl_glasses.analysis.patching import patch_pair

    for f in (tg.collapse_sweep, tg.evaluate, copy_study, patch_pair):
        assert inspect.signature(f).parameters["progress"].default is True, f.__name__
