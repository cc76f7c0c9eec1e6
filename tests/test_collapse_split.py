"""collapse.py split into modules (issue 14): the noise-floor rule lives once, so
LastTokenDistance's reported values and derive_reported's columns agree; every name
is still importable from tl_glasses.analysis.collapse; results saved before the split
(module ``tl_glasses.analysis.collapse`` in meta.json) still load as CollapseResult."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tl_glasses as tg
from tl_glasses.analysis.collapse import (
    FLOOR_OUTPUTS,
    CollapseResult,
    LastTokenDistance,
    derive_reported,
    last_token_distance,
    model_for_dtype,
)
from tl_glasses.results import Result

REPO = Path(__file__).resolve().parent.parent
A = "Count: 11111111."
B = "Count: 111111111."


def _same(x, y) -> bool:
    if isinstance(x, (list, tuple, np.ndarray)) or isinstance(y, (list, tuple, np.ndarray)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, (bool, np.bool_)) or isinstance(y, (bool, np.bool_)):
        return bool(x) == bool(y)
    x, y = float(x), float(y)
    return (math.isnan(x) and math.isnan(y)) or x == y


@pytest.fixture(scope="module")
def cases() -> dict[str, LastTokenDistance]:
    model = tg.load_model("tiny:llama")
    bf16 = model_for_dtype(model, "bf16")
    d = {
        "pair": last_token_distance(model, A, B),
        "identical": last_token_distance(model, A, A),  # y_a == y_b: within the floor
        "bf16": last_token_distance(bf16, A, B),
        "round_bf16": last_token_distance(model, A, B, round_to="bf16"),
        "no_layers_heads": last_token_distance(model, A, B, layers=False, heads=False),
        "no_shift": last_token_distance(model, A, B, shift_floor=False, floor_factor=3.0),
    }
    base = d["pair"]
    # the other branches of the rule, on real measurements with floors moved onto them
    d["linf_within"] = dataclasses.replace(base, noise_linf=base.linf_measured, noise_shift_linf=float("nan"))
    d["heads_within"] = dataclasses.replace(base, noise_head=float(np.max(base.heads_measured)))
    d["layers_within"] = dataclasses.replace(base, noise_layer=list(base.per_layer_measured))
    d["no_floor"] = dataclasses.replace(base, noise_l2=float("nan"), noise_shift_l2=float("nan"),
                                        noise_batch_l2=float("nan"))
    return d


def test_one_floor_rule_for_the_object_and_the_dataframe(cases):
    rows = [dict(d.raw_row(), n=i, mitigation=name) for i, (name, d) in enumerate(cases.items())]
    df = derive_reported(pd.DataFrame(rows)).set_index("mitigation")  # one arm each: no filling
    assert not df["floor_shift_filled"].any()
    for name, d in cases.items():
        r, obj = df.loc[name], d.as_row()
        for col in (*FLOOR_OUTPUTS, "per_layer", "per_layer_floor"):
            assert _same(r[col], obj[col]), (name, col, r[col], obj[col])
            assert _same(obj[col], getattr(d, col)), (name, col)
    # the cases cover both sides of every branch
    assert df.loc["identical", "below_floor"] and not df.loc["pair", "below_floor"]
    assert df.loc["identical", "l2_measured"] == 0.0 and math.isnan(cases["identical"].l2)
    assert math.isnan(cases["linf_within"].linf) and not math.isnan(cases["linf_within"].l2)
    assert math.isnan(cases["heads_within"].head_min) and not math.isnan(cases["pair"].head_min)
    assert all(math.isnan(x) for x in cases["layers_within"].per_layer)
    assert math.isnan(cases["no_floor"].floor_l2) and not cases["no_floor"].below_floor
    assert cases["no_layers_heads"].per_layer == [] and math.isnan(cases["no_layers_heads"].head_mean)
    assert cases["bf16"].dtype == "bfloat16" and cases["round_bf16"].mode == "round"


def test_failed_rows_report_nothing():
    row = dict(n=1, dtype="float32", mode="native", mitigation="none", status="nonfinite at x",
               l2_measured=1.0, linf_measured=1.0, rel_measured=0.1, head_mean_measured=1.0,
               head_min_measured=1.0, head_max_measured=1.0, floor_factor=2.0, noise_l2=5.0)
    r = derive_reported(pd.DataFrame([row])).iloc[0]
    assert not r["below_floor"] and all(math.isnan(r[c]) for c in ("l2", "rel", "linf", "head_mean"))


def test_every_name_is_still_importable_from_collapse():
    import tl_glasses.analysis.collapse as col

    for name in ("CollapseResult", "LastTokenDistance", "LastTokenProbe", "_run_pair", "_run_shifted",
                 "_compare", "_check_finite", "_batch_floor", "_pad_id", "_common_prefix", "_indexes",
                 "_pos_row", "_diffs", "_dtype", "_ulp", "_nan", "_DTYPE_NAMES", "derive_reported",
                 "model_for_dtype", "parse_lengths", "_parse_lengths", "dtype_name", "noise_floor",
                 "last_token_distance", "collapse_sweep", "_every", "_fill_bracketing",
                 "_versions", "_ARM"):
        assert hasattr(col, name), name
    assert all(hasattr(col, n) for n in col.__all__)
    assert col.model_for_dtype is tg.models.model_for_dtype
    assert tg.CollapseResult is col.CollapseResult and tg.collapse_sweep is col.collapse_sweep


def _saved(tmp_path, module: str) -> Path:
    model = tg.tiny_model("llama", n_layers=2)
    res = tg.collapse_sweep(model, "ones", [2, 3], progress=False, shift_floor="none", batch_floor="none")
    path = res.save(tmp_path / "res")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["class"] == "CollapseResult"
    meta["module"] = module
    (path / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


_LOAD = """
import sys
from tl_glasses.results import Result
res = Result.load(sys.argv[1])
import tl_glasses.analysis.collapse as col
assert isinstance(res, col.CollapseResult), type(res)
print(type(res).__name__, len(res.df), res.collapse_table().shape[0])
"""


@pytest.mark.parametrize("module", ["tl_glasses.analysis.collapse", "tl_glasses.analysis._collapse_result"])
def test_a_result_saved_before_the_split_loads(tmp_path, module):
    path = _saved(tmp_path, module)
    res = Result.load(path)
    assert isinstance(res, CollapseResult) and len(res.df) == 2
    assert isinstance(CollapseResult.load(path), CollapseResult)
    # in a fresh session, where only the module named in meta.json registers the class
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[:2] == ["CollapseResult", "2"]
