"""The report: generated from a fresh directory, assembled from the saved results,
and rendered offline by headless Chromium (circuitsvis view drawn, every image loaded,
no console errors); a screenshot is kept for the CI log."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from _browser import CHROMIUM, DRIVER, offline_driver, page_state

ARTIFACTS = Path(os.environ.get("TL_GLASSES_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, gemma):
    import tl_glasses as tg

    import warnings

    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        path = tg.report(gemma, out, profile="smoke", progress=False)
    _WARNINGS[:] = [str(w.message) for w in seen]
    return out, path


_WARNINGS: list[str] = []


@pytest.mark.real
@pytest.mark.slow
def test_report_checks_pass_no_fallback_and_tasks_equal_the_recompute(smoke_report, gemma):
    """Issue 12: the report's self-checks pass on the embedded model, nothing falls back
    to another path, and the task numbers it wrote equal the plain recompute."""
    from test_doctor import _assert_task_rows_equal_recompute

    out, _ = smoke_report
    checks = pd.read_parquet(out / "raw/checks/checks/data.parquet")
    assert len(checks) >= 8 and checks.ok.all(), checks[~checks.ok]
    assert not [w for w in _WARNINGS if "does not reproduce" in w or "fast path" in w], _WARNINGS
    _assert_task_rows_equal_recompute(gemma, out)


@pytest.mark.real
@pytest.mark.slow
def test_report_tables_equal_the_saved_results(smoke_report):
    from lxml import html as lhtml

    out, path = smoke_report
    doc = lhtml.fromstring(path.read_text())
    blocks = doc.xpath('//div[@class="table"][@data-source]')
    assert len(blocks) >= 6
    for block in blocks:
        source = out / block.get("data-source")
        saved = pd.read_parquet(source)
        shown = pd.read_html(io.StringIO(lhtml.tostring(block.xpath(".//table")[0]).decode()))[0]
        # a table shows the saved file's columns, in order (a selection of them for the
        # long tables of measured rows) and its values
        saved_cols = [str(c) for c in saved.columns]
        assert list(shown.columns) == [c for c in saved_cols if c in set(shown.columns)], source
        assert len(shown) == min(len(saved), 40), source
        saved.columns = saved_cols
        for col in shown.columns:
            for got, want in zip(shown[col].head(40), saved[col].head(40)):
                if isinstance(want, float) and pd.notna(want):
                    assert float(got) == pytest.approx(want, rel=1e-3, abs=1e-12), (source, col)
                elif pd.isna(want) or want is None:
                    assert pd.isna(got) or got in ("", "None"), (source, col)
                else:
                    assert str(got) == str(want), (source, col)


@pytest.mark.real
@pytest.mark.slow
def test_report_summary_tables_are_recomputed_from_the_raw_results(smoke_report):
    """The derived tables the page shows are what the analysers' own summaries give on
    the saved raw results."""
    from tl_glasses.analysis.collapse import CollapseResult

    out, _ = smoke_report
    raw = CollapseResult.load(out / "raw" / "collapse" / "result")
    shown = pd.read_parquet(out / "raw" / "collapse" / "collapse_table.parquet")
    pd.testing.assert_frame_equal(shown, raw.collapse_table().reset_index(drop=True), check_dtype=False)


@pytest.mark.real
@pytest.mark.slow
def test_report_rerun_reuses_saved_steps(smoke_report, gemma, tmp_path):
    import json

    import tl_glasses as tg

    import shutil

    src, _ = smoke_report
    out = tmp_path / "rerun"  # a copy: a rerun with a subset of steps rewrites index.html
    shutil.copytree(src, out)
    t = time.perf_counter()
    tg.report(gemma, out, profile="smoke", progress=False, steps=["collapse", "tasks"])
    assert time.perf_counter() - t < 30
    steps = json.loads((out / "report.json").read_text())["steps"]
    assert steps["collapse"] < 10 and steps["tasks"] < 10


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="Debian's chromium/chromium-driver not installed")
def test_report_renders_offline_in_chromium(smoke_report, tmp_path):
    out, path = smoke_report
    driver = offline_driver(tmp_path)
    try:
        driver.get(path.resolve().as_uri())
        deadline = time.time() + 20
        state = page_state(driver)
        while (state["empty_views"] or not state["views"]) and time.time() < deadline:
            time.sleep(0.5)
            state = page_state(driver)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height), 12000))
        shot = ARTIFACTS / "report-screenshot.png"
        driver.save_screenshot(str(shot))
        print(f"\nreport screenshot: {shot}")
    finally:
        driver.quit()
    assert state["views"] >= 1 and state["empty_views"] == 0, state
    assert state["images"] >= 8 and not state["broken"], state
    assert not errors, errors


def test_the_all_global_step_is_skipped_on_a_model_without_local_layers(tmp_path, monkeypatch):
    """A model whose layers all attend globally (Llama-style, Qwen2) has nothing to make
    global: the step is left out instead of stopping the report."""
    import tl_glasses as tg
    from tl_glasses.viz import report as R

    monkeypatch.setitem(R.PROFILES, "smoke", dict(R.PROFILES["smoke"], global_lengths=[8]))
    model = tg.load_model("tiny:llama")
    path = tg.report(model, tmp_path, profile="smoke", progress=False, steps=["global"])
    assert path.exists()
    assert not (tmp_path / "raw" / "global" / "result").exists()
