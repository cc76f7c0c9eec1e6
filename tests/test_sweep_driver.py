"""The one sweep driver (issue 14, item 2): :func:`tl_glasses.sweeps.run_rows` /
:meth:`RowStore.run`, used by collapse_sweep, the over-squashing studies, evaluate and
the theory checks.

It computes only the rows not yet in the store, returns exactly the rows asked for (one
per key, in the order asked) whatever else the directory holds, keeps rows in memory
for ``out=None``, drops a last line cut short by a kill, refuses another configuration,
and reads and writes the files in the format of before it (directories written by the
earlier code, in tests/fixtures/old_sweeps, resume)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import tl_glasses as tg
from tl_glasses.errors import GlassesError, ResultsMismatchError
from tl_glasses.sweeps import RowStore, run_rows

OLD = Path(__file__).resolve().parent / "fixtures" / "old_sweeps"
CONFIG = {"analysis": "demo", "seed": 0}
KEY = ["x", "n"]

# today's format, written by hand: config.json as json.dumps(config, indent=1, sort_keys=True),
# one JSON object per line, non-finite floats as {"__float__": "nan"}, the last line cut by a kill
CONFIG_JSON = '{\n "analysis": "demo",\n "seed": 0\n}'
ROWS_JSONL = ('{"x": "a", "n": 1, "y": 2}\n'
              '{"x": "a", "n": 2, "y": {"__float__": "nan"}}\n'
              '{"x": "a", "n": 3, "y"')


def _write(d: Path, config_json: str = CONFIG_JSON, rows: str = ROWS_JSONL) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(config_json)
    (d / "rows.jsonl").write_text(rows)
    return d


class Counter:
    def __init__(self):
        self.seen = []

    def __call__(self, item):
        self.seen.append(item["n"])
        return {"y": 2 * item["n"]}


def _items(ns, x="a"):
    return [{"x": x, "n": n} for n in ns]


def test_resumes_a_directory_in_todays_format(tmp_path):
    d = _write(tmp_path / "run")
    f = Counter()
    df = run_rows(_items([1, 2, 3, 4]), f, out=d, config=CONFIG, key=KEY, progress=False)
    assert f.seen == [3, 4]  # the half-written row 3 is recomputed, rows 1 and 2 are not
    assert df["n"].tolist() == [1, 2, 3, 4] and df["y"].tolist()[::2] == [2, 6]
    assert pd.isna(df["y"].iloc[1]) and df["y"].iloc[3] == 8
    assert (d / "config.json").read_text() == CONFIG_JSON
    assert (d / "rows.jsonl").read_text() == (
        '{"x": "a", "n": 1, "y": 2}\n'
        '{"x": "a", "n": 2, "y": {"__float__": "nan"}}\n'
        '{"x": "a", "n": 3, "y": 6}\n'
        '{"x": "a", "n": 4, "y": 8}\n')
    f = Counter()
    again = run_rows(_items([1, 2, 3, 4]), f, out=d, config=CONFIG, key=KEY, progress=False)
    assert f.seen == [] and again["n"].tolist() == [1, 2, 3, 4]


def test_returns_exactly_the_rows_asked_for(tmp_path):
    d = tmp_path / "run"
    run_rows(_items([1, 2, 3, 4]) + _items([1], x="b"), Counter(), out=d, config=CONFIG, key=KEY, progress=False)
    f = Counter()
    df = run_rows(_items([3, 1, 3]), f, out=d, config=CONFIG, key=KEY, progress=False)
    assert f.seen == []
    # one row per requested key, in the order asked; none of the other rows on disk
    assert list(zip(df["x"], df["n"])) == [("a", 3), ("a", 1)] and df.index.tolist() == [0, 1]
    df = run_rows(_items([5, 2]), f, out=d, config=CONFIG, key=KEY, progress=False)
    assert f.seen == [5] and df["n"].tolist() == [5, 2] and df["y"].tolist() == [10, 4]
    assert len((d / "rows.jsonl").read_text().splitlines()) == 6
    assert run_rows([], f, out=d, config=CONFIG, key=KEY, progress=False).empty


def test_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = Counter()
    df = run_rows(_items([2, 1, 2]), f, config=CONFIG, key=KEY, progress=False)
    assert f.seen == [2, 1] and df["n"].tolist() == [2, 1] and df["y"].tolist() == [4, 2]
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    store = RowStore(None, CONFIG, KEY)
    store.run(_items([1, 2]), f, progress=False)
    f.seen.clear()
    df = store.run(_items([2, 3]), f, progress=False)  # the same store skips what it holds
    assert f.seen == [3] and df["n"].tolist() == [2, 3] and len(store.rows) == 3
    assert store.path is None and store.done(x="a", n=1) and not store.done(x="a", n=9)


def test_a_truncated_last_line_is_dropped_and_recomputed(tmp_path):
    d = tmp_path / "run"
    run_rows(_items([1, 2, 3]), Counter(), out=d, config=CONFIG, key=KEY, progress=False)
    raw = (d / "rows.jsonl").read_bytes()
    (d / "rows.jsonl").write_bytes(raw[:-7])  # SIGKILL in the middle of the third write
    f = Counter()
    df = run_rows(_items([1, 2, 3]), f, out=d, config=CONFIG, key=KEY, progress=False)
    assert f.seen == [3] and df["y"].tolist() == [2, 4, 6]
    assert (d / "rows.jsonl").read_bytes() == raw


def test_another_configuration_is_refused(tmp_path):
    d = _write(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    f = Counter()
    with pytest.raises(ResultsMismatchError, match=r"different configuration \(differs in: seed\)"):
        run_rows(_items([1, 5]), f, out=d, config={**CONFIG, "seed": 1}, key=KEY, progress=False)
    assert f.seen == [] and {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_batches(tmp_path):
    calls = []

    def compute(chunk):
        calls.append([it["n"] for it in chunk])
        return [{"y": 2 * it["n"]} for it in chunk]

    d = tmp_path / "run"
    run_rows(_items([2]), lambda it: {"y": 4}, out=d, config=CONFIG, key=KEY, progress=False)
    df = run_rows(_items(range(1, 8)), compute, out=d, config=CONFIG, key=KEY, progress=False, batch=3)
    assert calls == [[1, 3, 4], [5, 6, 7]] and df["y"].tolist() == [2 * n for n in range(1, 8)]
    with pytest.raises(GlassesError, match="one row .* per item"):
        run_rows(_items([8, 9]), lambda chunk: [{"y": 0}], out=d, config=CONFIG, key=KEY, progress=False, batch=2)
    with pytest.raises(GlassesError, match="changed a key field"):
        run_rows(_items([10]), lambda it: {"n": 11}, config=CONFIG, key=KEY, progress=False)


def test_progress_counts_calls_of_compute(monkeypatch):
    import tqdm.auto

    seen = []

    def fake(iterable, **kw):
        seen.append((len(iterable), kw))
        return iterable

    monkeypatch.setattr(tqdm.auto, "tqdm", fake)
    run_rows(_items(range(5)), lambda chunk: [{} for _ in chunk], config=CONFIG, key=KEY, desc="d", batch=2)
    assert seen == [(3, dict(desc="d", disable=False, leave=False))]
    seen.clear()
    run_rows([], Counter(), config=CONFIG, key=KEY, progress=True)
    assert seen[0][1]["disable"]


def test_the_private_loops_are_gone():
    import tl_glasses.analysis.collapse as col
    import tl_glasses.analysis.oversquashing as osq
    import tl_glasses.synthetic._theory_base as tb

    assert not hasattr(col, "_MemoryStore") and not hasattr(osq, "_run") and not hasattr(osq, "_store")
    assert not hasattr(tb, "_run_rows")


# --- directories written by the code of before the driver ---------------------------------------
def _resume_copy(tmp_path, name):
    d = tmp_path / name
    shutil.copytree(OLD / name, d)
    return d, (OLD / name / "rows.jsonl").read_text().splitlines(keepends=True)


def _lines(d):
    return (d / "rows.jsonl").read_text().splitlines(keepends=True)


def test_an_old_collapse_directory_resumes(tmp_path, monkeypatch):
    import tl_glasses.analysis.collapse as col

    d, old = _resume_copy(tmp_path, "collapse")
    runs = []
    real = col._run_pair
    monkeypatch.setattr(col, "_run_pair", lambda *a, **k: runs.append(1) or real(*a, **k))
    kw = dict(round_to=["bf16"], progress=False, shift_floor="none", batch_floor="none")
    model = tg.tiny_model("llama", n_layers=2)
    res = tg.collapse_sweep(model, "ones", [2, 3, 4], out=d, **kw)
    # only the row the kill cut short (n=4, rounded to bf16) is computed: one float32 pair
    assert len(runs) == 1
    lines = _lines(d)
    assert lines[:-1] == old[:-1] and old[-1] == lines[-1][: len(old[-1])] and len(lines) == 6
    assert (d / "config.json").read_bytes() == (OLD / "collapse" / "config.json").read_bytes()
    fresh = tg.collapse_sweep(model, "ones", [2, 3, 4], out=tmp_path / "fresh", **kw)
    runs.clear()
    assert [json.loads(x).keys() for x in lines] == [json.loads(x).keys() for x in _lines(tmp_path / "fresh")]
    cols = ["n", "dtype", "mode", "mitigation", "l2_measured", "linf_measured", "noise_l2", "l2", "below_floor"]
    pd.testing.assert_frame_equal(res.df[cols], fresh.df[cols])
    # a shorter request on the same directory: exactly its rows
    short = tg.collapse_sweep(model, "ones", [3], out=d, **kw)
    assert runs == [] and short.df["n"].tolist() == [3, 3] and set(short.df["mode"]) == {"native", "round"}


def test_an_old_evaluate_directory_resumes(tmp_path, monkeypatch):
    from _task_helpers import ScriptedModel

    import tl_glasses.tasks.evaluate as ev

    d, old = _resume_copy(tmp_path, "evaluate")
    chunks = []
    real = ev._generate_chunk
    monkeypatch.setattr(ev, "_generate_chunk",
                        lambda m, chunk, **k: chunks.append([(it.n, it.index) for it in chunk]) or real(m, chunk, **k))
    m = ScriptedModel("The final answer to your maths question is: 7\n")
    kw = dict(n_items=2, scoring="generate", progress=False)
    res = tg.evaluate(m, "count_ones_zeros", [4, 7], out=d, **kw)
    assert chunks == [[(7, 1)]]
    lines = _lines(d)
    assert lines[:-1] == old[:-1] and len(lines) == 4
    fresh = tg.evaluate(m, "count_ones_zeros", [4, 7], out=tmp_path / "fresh", **kw)
    assert lines == _lines(tmp_path / "fresh")  # byte for byte what an uninterrupted run writes
    pd.testing.assert_frame_equal(res.df, fresh.df)
    back = ev.TaskResult.from_dir(d)
    assert back.df[["n", "item"]].values.tolist() == [[4, 0], [4, 1], [7, 0], [7, 1]]
    assert tg.evaluate(m, "count_ones_zeros", [7], out=d, **kw).df["n"].tolist() == [7, 7]


def test_an_old_theory_directory_resumes(tmp_path, monkeypatch):
    from tl_glasses.synthetic import _theory_lab as lab
    from tl_glasses.synthetic import theory as th

    d, old = _resume_copy(tmp_path, "theory")
    runs = []
    real = lab._last_token
    monkeypatch.setattr(lab, "_last_token", lambda *a, **k: runs.append(1) or real(*a, **k))
    res = th.collapse_by_pe(("none",), lengths=[16, 32], trials=1, store_dir=d)
    assert len(runs) == 2  # one row: v and v*
    lines = _lines(d)
    fresh = th.collapse_by_pe(("none",), lengths=[16, 32], trials=1, store_dir=tmp_path / "fresh")
    assert lines[:-1] == old[:-1] and lines == _lines(tmp_path / "fresh")
    pd.testing.assert_frame_equal(res.df, fresh.df)
