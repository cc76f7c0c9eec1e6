"""LastTokenDistance is a Result (issue 14, item 5): one-row df, meta, y_a/y_b tensors,
a per-layer plot, and save/Result.load round-trip to an equal object; the dataclass
fields, keyword construction, dataclasses.replace and settable fields keep working."""
from __future__ import annotations

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tl_glasses as tg  # noqa: E402
from tl_glasses.analysis.collapse import LastTokenDistance, last_token_distance  # noqa: E402
from tl_glasses.results import Result  # noqa: E402

A = "Count: 11111111."
B = "Count: 111111111."


def _same(x, y) -> bool:
    if isinstance(x, (list, tuple, np.ndarray)) or isinstance(y, (list, tuple, np.ndarray)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, str) or isinstance(y, str):
        return x == y
    x, y = float(x), float(y)
    return (math.isnan(x) and math.isnan(y)) or x == y


def _rows_equal(r1: dict, r2: dict) -> bool:
    return r1.keys() == r2.keys() and all(_same(r1[k], r2[k]) for k in r1)


@pytest.fixture(scope="module")
def model():
    return tg.load_model("tiny:llama")


@pytest.fixture(scope="module")
def cases(model):
    pair = last_token_distance(model, A, B)
    return {
        "pair": pair,
        "identical": last_token_distance(model, A, A),
        "no_layers_heads": last_token_distance(model, A, B, layers=False, heads=False),
        "no_logits_floor": dataclasses.replace(pair, same_argmax=None, argmax_a=None, argmax_b=None,
                                               next_token_tv=float("nan"), y_a=None, y_b=None),
    }


def test_is_a_result_with_one_row(cases):
    d = cases["pair"]
    assert isinstance(d, Result) and isinstance(d, LastTokenDistance)
    assert dataclasses.is_dataclass(d)
    assert len(d.df) == 1 and _rows_equal(d.df.iloc[0].to_dict(), d.as_row())
    assert set(d.tensors) == {"y_a", "y_b"} and torch.equal(d.tensors["y_a"], d.y_a)
    assert d.meta["dtype"] == d.dtype and d.meta["mode"] == "native"
    assert d.meta["attn_impl"] == d.attn_impl and d.meta["n_tokens"] == [d.n_tokens_a, d.n_tokens_b]
    assert cases["no_logits_floor"].tensors == {}
    assert "tokens" in d.summary() and "LastTokenDistance(" in repr(d)
    assert "<img" in d._repr_html_()
    assert d.to_dataframe().shape == (1, len(d.as_row()))


def test_settable_field_shows_in_row_and_df(cases):
    d = dataclasses.replace(cases["pair"])
    d.noise_batch_l2 = 1e9
    assert d.raw_row()["noise_batch_l2"] == 1e9 and d.below_floor
    assert d.df.iloc[0]["noise_batch_l2"] == 1e9 and bool(d.df.iloc[0]["below_floor"])


@pytest.mark.parametrize("name", ["pair", "identical", "no_layers_heads", "no_logits_floor"])
def test_save_load_round_trip(cases, name, tmp_path):
    d = cases[name]
    path = d.save(tmp_path / name)
    back = Result.load(path)
    assert type(back) is LastTokenDistance
    assert _rows_equal(back.raw_row(), d.raw_row()), name
    assert _rows_equal(back.as_row(), d.as_row()), name
    assert back.tensors.keys() == d.tensors.keys()
    assert all(torch.equal(back.tensors[k], d.tensors[k]) for k in d.tensors)
    assert LastTokenDistance.load(path).raw_row().keys() == d.raw_row().keys()
    assert type(back.n_tokens_a) is int and type(back.bitwise_equal) is bool
    assert isinstance(back.per_layer_measured, list) and isinstance(back.dtype, str)


def test_plot_per_layer(cases):
    import matplotlib.pyplot as plt

    d = cases["pair"]
    fig = d.plot()
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.lines[0].get_xdata()) == len(d.per_layer_measured)
    plt.close(fig)
    fig, ax = plt.subplots()
    assert cases["identical"].plot(ax) is fig  # everything within the floor: hollow markers
    plt.close(fig)
    with pytest.raises(tg.errors.GlassesError):
        cases["no_layers_heads"].plot()
