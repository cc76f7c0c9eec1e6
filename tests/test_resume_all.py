"""SIGKILL resume for the long commands not covered elsewhere (issue 9).

Covered already: ``collapse`` (tests/test_collapse_resume.py) and ``tasks``
(tests/test_tasks.py::test_sigkilled_cli_run_resumes_without_loss_or_duplicates).
Here: ``theory`` (rows appended through RowStore). ``patch``, ``paths`` and
``sensitivity`` write their result once, atomically, at the end (nothing half-written
to lose: checked below, each killed at a random point), and ``report`` reuses each
finished step's saved result (killed after its second step, checked below)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "tl_glasses.cli", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _rows(path):
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill: RowStore drops it on resume
            pass
    return out


@pytest.mark.slow
def test_theory_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    rows_file = killed / "fig10" / "rows-quick" / "rows.jsonl"
    stop_at = random.Random().randint(4, 60)
    proc = _cli("theory", "fig10", "--quick", "--out", str(killed))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(_rows(rows_file)) < stop_at:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _rows(rows_file)
    assert stop_at <= len(partial) < 128

    rerun = _cli("theory", "fig10", "--quick", "--out", str(killed))
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    ref = _cli("theory", "fig10", "--quick", "--out", str(clean))
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err.decode()[-2000:]

    a = pd.DataFrame(_rows(rows_file))
    b = pd.DataFrame(_rows(clean / "fig10" / "rows-quick" / "rows.jsonl"))
    value_cols = [c for c in b.columns if not c.startswith(("seconds", "time"))]
    key = [c for c in value_cols if b[c].dtype.kind not in "fc"]  # the row identity: non-float columns
    assert len(a) == len(b) == 128
    assert not a.astype(str).duplicated(key).any()
    sa = a[value_cols].astype(str).sort_values(value_cols).reset_index(drop=True)
    sb = b[value_cols].astype(str).sort_values(value_cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(sa, sb)
    # the rows written before the kill are kept as they were
    first = pd.DataFrame(partial)[value_cols].astype(str)
    assert set(map(tuple, first.values)) <= set(map(tuple, sa.values))
    # the final saved results agree too
    fa = pd.read_parquet(killed / "fig10" / "data.parquet")
    fb = pd.read_parquet(clean / "fig10" / "data.parquet")
    cols = [c for c in fb.columns if not c.startswith(("seconds", "time"))]
    pd.testing.assert_frame_equal(fa[cols], fb[cols], check_exact=True)


ONE_SHOT = {
    "paths": (("paths", "--model", "tiny:llama", "--prompt", "1" * 200), "path_bound/data.parquet"),
    "sensitivity": (("sensitivity", "--model", "tiny:llama", "--prompt", "1" * 120, "--method", "jacobian"),
                    "result/data.parquet"),
    "patch": (("patch", "--model", "tiny:llama", "--family", "ones", "--n", "12,24", "--method", "exact"),
              None),
}


def _assert_same_results(a, b):
    """Every Parquet file under ``b`` exists under ``a`` with the same values (timing
    columns aside)."""
    files = sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    assert files
    for rel in files:
        fa, fb = pd.read_parquet(a / rel), pd.read_parquet(b / rel)
        cols = [c for c in fb.columns if not str(c).startswith(("seconds", "time"))]
        pd.testing.assert_frame_equal(fa[cols], fb[cols], check_exact=True, obj=str(rel))


@pytest.mark.slow
@pytest.mark.parametrize("command", list(ONE_SHOT))
def test_one_shot_commands_leave_nothing_half_written(command, tmp_path):
    """A one-shot command killed at a random point leaves only complete files (atomic
    writes); the rerun completes with the results of an uninterrupted run."""
    out = tmp_path / "p"
    cli_args, product = ONE_SHOT[command]
    args = (*cli_args, "--out", str(out))
    proc = _cli(*args)
    time.sleep(random.uniform(2.0, 12.0))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def check_complete():
        for p in out.rglob("*") if out.exists() else []:
            if p.suffix == ".parquet":
                pd.read_parquet(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".csv":
                pd.read_csv(p)

    check_complete()
    rerun = _cli(*args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-2000:]
    check_complete()
    if product is not None:
        assert (out / product).exists(), sorted(p.name for p in out.rglob("*"))
    clean = tmp_path / "clean"
    ref = _cli(*cli_args, "--out", str(clean))
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-2000:]
    _assert_same_results(out, clean)


@pytest.mark.slow
def test_report_sigkill_then_rerun_reuses_finished_steps(tmp_path):
    """``report`` killed mid-run: the steps finished before the kill are reused as they
    were (same bytes), the interrupted one reruns, the page is written, and every saved
    result equals an uninterrupted run's."""
    out = tmp_path / "r"
    args = ("report", "--model", "tiny:llama", "--profile", "smoke", "--no-progress", "--out", str(out))
    proc = _cli(*args)
    done_marker = out / "raw" / "oversquashing" / "step.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not done_marker.exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the report ended before it could be killed"
    time.sleep(random.uniform(0.0, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "index.html").exists()
    finished_steps = sorted(p.parent.name for p in (out / "raw").glob("*/step.json"))
    assert {"collapse", "oversquashing"} <= set(finished_steps)
    finished = {p: p.read_bytes() for step in finished_steps for p in (out / "raw" / step).rglob("*") if p.is_file()}

    rerun = _cli(*args)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    assert (out / "index.html").exists()
    for p, data in finished.items():
        assert p.read_bytes() == data, p
    timings = json.loads((out / "report.json").read_text())["steps"]
    for step in finished_steps:
        assert timings[step] < 5, (step, timings)
    clean = tmp_path / "clean"
    ref = _cli(*args[:-1], str(clean))
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err.decode()[-2000:]
    _assert_same_results(out / "raw", clean / "raw")
