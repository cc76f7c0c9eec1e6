"""The verdict rules of docs/findings_items.py on hand-made results: each verdict is
reachable, and a floor is never read as a finding (issue 13)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def items():
    spec = importlib.util.spec_from_file_location("findings_items", REPO / "docs" / "findings_items.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _task_run(root: Path, model: str, run: str, task: str, rows: list[tuple[int, int, bool, float, int]]):
    """rows: (n, item, correct, margin, prediction)."""
    d = root / model / run
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(dict(kind="tl_glasses.evaluate", model=model, task=task,
                                                   mode="answer", scoring="score", options={})))
    with (d / "rows.jsonl").open("w") as f:
        for n, item, ok, margin, pred in rows:
            answer = 0 if task.startswith("copy") else n
            f.write(json.dumps(dict(task=task, kind="copy" if task.startswith("copy") else "count",
                                    condition=task, mode="answer", scoring="score", n=n, item=item,
                                    answer=answer, prediction=pred, correct=ok, abs_error=abs(pred - answer),
                                    parse_status="scored", logit_diff=margin, p_answer=0.9 if ok else 0.1,
                                    rank=1 if ok else 2)) + "\n")


LENGTHS = [2, 5, 10, 50, 100]


def test_copy_last_failing_first_is_reproduced(tmp_path, items):
    _task_run(tmp_path, "m", "copy_last-score", "copy_last", [(n, 0, n < 50, 1.0 if n < 50 else -1.0, 0 if n < 50 else 1) for n in LENGTHS])
    _task_run(tmp_path, "m", "copy_first-score", "copy_first", [(n, 0, True, 2.0, 0) for n in LENGTHS])
    txt, v = items.fig2a(tmp_path, "m")
    assert v == "reproduced" and "first wrong at n = 50" in txt


def test_both_wrong_everywhere_is_a_floor_not_a_finding(tmp_path, items):
    for run, task in (("copy_last-score", "copy_last"), ("copy_first-score", "copy_first")):
        _task_run(tmp_path, "m", run, task, [(n, 0, False, -2.0, 1) for n in LENGTHS])
    assert items.fig2a(tmp_path, "m")[1].startswith("not (floor")


def test_first_failing_before_last_is_contradicted(tmp_path, items):
    _task_run(tmp_path, "m", "copy_last-score", "copy_last", [(n, 0, True, 1.0, 0) for n in LENGTHS])
    _task_run(tmp_path, "m", "copy_first-score", "copy_first", [(n, 0, n < 10, 1.0, 0 if n < 10 else 1) for n in LENGTHS])
    assert items.fig2a(tmp_path, "m")[1] == "contradicted"


def test_hint_with_saturated_accuracy_is_at_most_partly(tmp_path, items):
    _task_run(tmp_path, "m", "copy_last-score", "copy_last", [(n, 0, True, 1.0, 0) for n in LENGTHS])
    _task_run(tmp_path, "m", "copy_last-hint-score", "copy_last", [(n, 0, True, 3.0, 0) for n in LENGTHS])
    txt, v = items.fig2b(tmp_path, "m")
    assert v.startswith("partly") and "+2.00" in txt


def test_counting_that_is_wrong_at_small_n_is_a_floor(tmp_path, items):
    for task in ("count_sum", "count_ones"):
        _task_run(tmp_path, "m", f"{task}-answer-score", task, [(n, 0, False, -1.0, 1) for n in [2, 5, 10, 50, 100]])
    assert items.fig3(tmp_path, "m")[1].startswith("not (floor")
    # every wrong answer is 1: one constant answer, not round numbers
    assert items.fig4(tmp_path, "m")[1].startswith("not (one constant answer")


def test_counting_right_small_wrong_large_is_reproduced(tmp_path, items):
    rows = [(n, i, n <= 10, 1.0 if n <= 10 else -1.0, n if n <= 10 else 20) for n in [2, 5, 10, 50, 100] for i in range(10)]
    _task_run(tmp_path, "m", "count_ones_zeros-answer-score", "count_ones_zeros", rows)
    txt, v = items.fig3(tmp_path, "m")
    assert v == "reproduced", txt
    assert items.fig4(tmp_path, "m")[1] == "reproduced"


def test_missing_results_say_not_run(tmp_path, items):
    for fn in (items.fig2a, items.fig2b, items.fig2c, items.fig3, items.fig4, items.thm51, items.prop52,
               items.fig5cd, items.c5, items.theory_figs):
        assert fn(tmp_path, "m")[1] == "not run"
    assert items.c6(tmp_path, "smollm2-135m")[1].startswith("n/a")
    assert items.c6(tmp_path, "gemma-3-270m")[1] == "not run"


def test_generated_ten_item_variant_counts_for_fig2a(tmp_path, items):
    """Both of the paper's items right everywhere: the generated ten-item variant decides,
    and only when it has the last digit below the first (apart: partly; overlapping: the
    weaker partly; the other way round: not)."""
    for run, task in (("copy_last-score", "copy_last"), ("copy_first-score", "copy_first")):
        _task_run(tmp_path, "m", run, task, [(n, 0, True, 2.0, 0) for n in LENGTHS])
    assert items.fig2a(tmp_path, "m")[1] == "not (both right to n = 100)"
    _task_run(tmp_path, "m", "copy_last-odd-gen", "copy_last",
              [(n, i, n < 10, 0.0, 0 if n < 10 else 1) for n in LENGTHS for i in range(10)])
    _task_run(tmp_path, "m", "copy_first-odd-gen", "copy_first", [(n, i, True, 0.0, 0) for n in LENGTHS for i in range(10)])
    txt, v = items.fig2a(tmp_path, "m")
    assert v == "partly (only the ten-item variant: last below first)", v
    assert "generated, 10 items per n (n = 2–100" in txt and "last 20/50" in txt and "first 50/50" in txt


def test_ten_item_variant_with_uneven_items_per_n(tmp_path, items):
    for run, task in (("copy_last-score", "copy_last"), ("copy_first-score", "copy_first")):
        _task_run(tmp_path, "m", run, task, [(n, 0, True, 2.0, 0) for n in LENGTHS])
    for run, task in (("copy_last-odd-score", "copy_last"), ("copy_first-odd-score", "copy_first")):
        _task_run(tmp_path, "m", run, task, [(n, i, True, 1.0, 0) for n in LENGTHS for i in range(10 if n < 100 else 3)])
    txt, v = items.fig2a(tmp_path, "m")
    assert "teacher-forced, 3–10 items per n" in txt and "last 43/43" in txt
    assert v.startswith("not")


def test_ten_item_errors_at_short_lengths_only_are_not_an_effect_of_length(tmp_path, items):
    """The last digit wrong at n = 2 and 5 only (10/20 there), right from the median length
    on: no effect of length, whatever the pooled counts say; the lower margin at the longest
    n is named."""
    for run, task in (("copy_last-score", "copy_last"), ("copy_first-score", "copy_first")):
        _task_run(tmp_path, "m", run, task, [(n, 0, True, 2.0, 0) for n in LENGTHS])
    _task_run(tmp_path, "m", "copy_last-odd-score", "copy_last",
              [(n, i, n > 5 or i % 2 == 0, 2.0, 0 if (n > 5 or i % 2 == 0) else 1) for n in LENGTHS for i in range(10)])
    _task_run(tmp_path, "m", "copy_first-odd-score", "copy_first",
              [(n, i, True, 1.0 if n < 100 else 0.3, 0) for n in LENGTHS for i in range(10)])
    txt, v = items.fig2a(tmp_path, "m")
    assert "last 40/50" in txt and "at n ≥ 10: last 30/30, first 30/30" in txt
    assert "mean margin at n = 100: last +2.00, first +0.30 nats" in txt
    assert v == "not (both right to n = 100; the first digit's margin is the lower at the longest n)", v


def test_a_margin_change_inside_its_interval_is_not_called_up_or_down(tmp_path, items):
    # accuracy saturated both ways; the hint moves the margin by +0.3 at one length and -0.3 at
    # another: the mean change is near zero and its interval spans zero
    base = [(n, 0, True, 2.0, 0) for n in LENGTHS]
    hint = [(n, 0, True, 2.0 + (0.3, -0.3, 0.2, -0.25, 0.1)[i], 0) for i, n in enumerate(LENGTHS)]
    _task_run(tmp_path, "m", "copy_last-score", "copy_last", base)
    _task_run(tmp_path, "m", "copy_last-hint-score", "copy_last", hint)
    txt, v = items.fig2b(tmp_path, "m")
    assert v == "not (accuracy saturated; margin unchanged within its 95% interval)", v
    assert "+0.01 nats [" in txt and "5 lengths" in txt


def test_a_consistent_margin_drop_is_called_down(tmp_path, items):
    _task_run(tmp_path, "m", "copy_last-score", "copy_last", [(n, 0, True, 2.0, 0) for n in LENGTHS])
    _task_run(tmp_path, "m", "copy_last-hint-score", "copy_last",
              [(n, 0, True, 1.0 + 0.05 * i, 0) for i, n in enumerate(LENGTHS)])
    assert items.fig2b(tmp_path, "m")[1] == "not (accuracy saturated; margin down)"
