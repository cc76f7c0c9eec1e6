"""A collapse sweep killed with SIGKILL and rerun loses and duplicates no row: the
result equals that of an uninterrupted run (the CLI, in subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

ARGS = ["collapse", "--model", "tiny:llama", "--family", "ones", "--lengths", "2:80:2",
        "--round-to", "bf16", "--shift-floor", "none", "--batch-floor", "none", "--no-progress"]
KEY = ["n", "dtype", "mode", "mitigation"]


def _cli(out, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, "-m", "tl_glasses.cli", *ARGS, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _rows(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _cli(killed)
    rows_file = killed / "rows.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(_rows(rows_file)) < 6:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _rows(rows_file)
    assert 6 <= len(partial) < 80
    # rerun: resumes
    rerun = _cli(killed)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    # an uninterrupted run for comparison
    ref = _cli(clean)
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err.decode()[-2000:]
    a = pd.DataFrame(_rows(rows_file))
    b = pd.DataFrame(_rows(clean / "rows.jsonl"))
    assert not a.duplicated(KEY).any()
    assert len(a) == len(b) == 80  # 40 lengths x (fp32 native + bf16 round)
    cols = ["l2_measured", "linf_measured", "bitwise_equal", "same_argmax", "next_token_tv", "n_tokens_b"]
    a = a.set_index(KEY).sort_index()[cols]
    b = b.set_index(KEY).sort_index()[cols]
    pd.testing.assert_frame_equal(a, b)
    # the first rows written before the kill are kept as they were
    first = pd.DataFrame(partial).set_index(KEY)[cols]
    pd.testing.assert_frame_equal(first, a.loc[first.index])
    # the saved result holds every row once
    res = pd.read_parquet(killed / "data.parquet")
    assert len(res) == 80 and not res.duplicated(KEY).any()
