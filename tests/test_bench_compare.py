"""The before/after benchmark comparison judges each ratio in its target's direction."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "bench_compare", Path(__file__).parent.parent / "benchmarks" / "compare.py")
compare_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_mod)


def _row(name, value, unit="x bare forward", target="<= 1.2x"):
    return dict(suite="s", benchmark=name, value=value, unit=unit, target=target)


def test_a_slower_ratio_is_worse_and_a_faster_one_is_not():
    base = [[_row("a", 1.00), _row("b", 1.00), _row("c", 1.00)]]
    head = [[_row("a", 1.06), _row("b", 1.04), _row("c", 0.5)]]
    got = {r["benchmark"]: r["verdict"] for r in compare_mod.compare(base, head, 0.05)}
    assert got == {"s: a": "worse", "s: b": "same or better", "s: c": "same or better"}


def test_a_speed_up_target_is_better_when_larger():
    base = [[_row("fast", 20.0, unit="x", target=">= 4x")]]
    head = [[_row("fast", 15.0, unit="x", target=">= 4x")]]
    (r,) = compare_mod.compare(base, head, 0.05)
    assert r["verdict"] == "worse" and r["change"] == -0.25


def test_seconds_are_shown_not_judged_and_medians_are_compared():
    base = [[_row("t", 1.0, unit="s")], [_row("t", 9.0, unit="s")], [_row("t", 2.0, unit="s")]]
    head = [[_row("t", 2.0, unit="s")]]
    (r,) = compare_mod.compare(base, head, 0.05)
    assert r["base"] == 2.0 and r["verdict"] == "not judged"


def test_a_benchmark_on_one_side_only_is_listed():
    got = compare_mod.compare([[_row("old", 1.0)]], [[_row("new", 1.0)]], 0.05)
    assert sorted(r["verdict"] for r in got) == ["only in base", "only in head"]


def test_a_speed_up_reported_without_a_target_is_better_when_larger_and_drift_is_not_judged():
    base = [[_row("jacobian speed-up over x", 4.0, unit="x", target="report"),
             _row("drift over the run", 1.0, unit="x", target="~1")]]
    head = [[_row("jacobian speed-up over x", 3.0, unit="x", target="report"),
             _row("drift over the run", 1.5, unit="x", target="~1")]]
    got = {r["benchmark"]: r["verdict"] for r in compare_mod.compare(base, head, 0.05)}
    assert got == {"s: jacobian speed-up over x": "worse", "s: drift over the run": "not judged"}


def test_an_approximate_cost_target_is_still_a_cost():
    base = [[_row("scoring per item", 1.2, target="~2 (context + tree)")]]
    head = [[_row("scoring per item", 1.4, target="~2 (context + tree)")]]
    (r,) = compare_mod.compare(base, head, 0.05)
    assert r["verdict"] == "worse"


def test_finished_rounds_are_kept_and_a_rerun_resumes_after_them(tmp_path, monkeypatch):
    calls = []

    def fake_run(tree, only, quick):
        calls.append(tree)
        return [_row("a", 1.0 + 0.01 * len(calls))]

    monkeypatch.setattr(compare_mod, "_run_suites", fake_run)
    out = tmp_path / "cmp.json"
    compare_mod.main(["--base", "HEAD", "--rounds", "2", "--out", str(out)])
    assert len(calls) == 4 and out.with_suffix(".rounds.json").exists()
    assert calls[2] == compare_mod.ROOT  # round 2 runs the working tree first
    compare_mod.main(["--base", "HEAD", "--rounds", "3", "--out", str(out)])
    assert len(calls) == 6  # only the third round ran
    compare_mod.main(["--base", "HEAD", "--rounds", "3", "--out", str(out)])
    assert len(calls) == 6
    compare_mod.main(["--base", "HEAD", "--rounds", "1", "--quick", "--out", str(out)])
    assert len(calls) == 8  # other sizes: a fresh log
