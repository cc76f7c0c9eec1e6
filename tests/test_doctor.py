"""`tl-glasses doctor` (issue 12): versions, then every self-check, exit 1 on a failure;
and the report's first step runs the same checks and never uses a path that failed."""
from __future__ import annotations

import json

import pytest
import torch

import tl_glasses as tg
from tl_glasses import _fastpath
from tl_glasses.cli import main
from tl_glasses.tasks import scoring as S

from test_fastpaths import _break_cache, _break_tree

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_doctor_passes_and_names_the_versions(capsys, tmp_path):
    import transformers

    rc = main(["doctor", "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"transformers {transformers.__version__}" in out and "transformer-lens" in out and "gguf" in out
    for arch in ("llama", "gemma3", "gpt2"):
        assert f"tiny:{arch}" in out
    for what in ("logits = plain transformers", "scoring tree = recompute", "scoring cache = recompute",
                 "generation cache = one-by-one", "generation recompute = one-by-one", "fused attention = eager",
                 "[within window]", "[beyond window]"):
        assert what in out, what
    assert "FAIL" not in out
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["ok"] is True and all(c["ok"] for c in data["checks"])
    assert data["environment"]["versions"]["transformers"] == transformers.__version__


def test_doctor_fails_when_a_fast_path_is_wrong(capsys, monkeypatch):
    _break_cache(monkeypatch)
    rc = main(["doctor"])
    out = capsys.readouterr().out
    assert rc == 1
    bad = [ln for ln in out.splitlines() if ln.startswith("[FAIL]")]
    assert bad and all("scoring cache = recompute" in ln for ln in bad), bad
    assert "FAILED" in out.splitlines()[-1]


def test_doctor_fails_when_logits_differ(capsys, monkeypatch):
    from tl_glasses import doctor as D

    real = D._logits_check

    def off(model, hf, tokens):
        run = real(model, hf, tokens)
        return lambda: (lambda d, t, s: (d + 1.0, t, s))(*run())

    monkeypatch.setattr(D, "_logits_check", off)
    assert main(["doctor"]) == 1
    assert "[FAIL] tiny:llama       logits" in capsys.readouterr().out


def test_doctor_argument_error(capsys):
    assert main(["doctor", "--no-tiny"]) == 2
    assert "--model" in capsys.readouterr().err


def test_report_checks_first_and_excludes_a_failed_path(tmp_path, monkeypatch):
    """A tree that is wrong on this model: the report's checks step shows the failure,
    the tasks step then scores through a verified path, and its numbers equal the
    plain recompute."""
    _break_tree(monkeypatch)
    model = tg.load_model("tiny:llama")
    tg.report(model, tmp_path, profile="smoke", steps=["checks", "tasks"], progress=False)
    checks = pd_read(tmp_path / "raw/checks/checks/data.parquet")
    assert not checks[checks.check.str.startswith("scoring tree")].ok.any()
    assert checks[checks.check.str.startswith("scoring cache")].ok.all()
    html = (tmp_path / "index.html").read_text()
    assert "is not used in this report" in html
    used = [(c.kind, c.path, c.ok) for c in _fastpath.checks(model) if c.kind.startswith("scoring")]
    assert ("scoring", "tree", True) not in used
    _assert_task_rows_equal_recompute(model, tmp_path)


def pd_read(path):
    import pandas as pd

    return pd.read_parquet(path)


def _assert_task_rows_equal_recompute(model, out, per_task=2):
    """Each scored row's log P(answer) and margin equal score_definition (one full forward
    per candidate) on the same prompt."""
    from tl_glasses.tasks import get_task
    from tl_glasses.tasks.evaluate import TaskResult, prepare_item

    for d in sorted((out / "raw" / "tasks").iterdir()):
        if not d.is_dir() or d.name.startswith(("rows-", "summary")):
            continue
        res = TaskResult.load(d)
        t = get_task(res.meta["task"])
        for _, row in res.df.head(per_task).iterrows():
            it = t.item(int(row.n), index=int(row["item"]), **res.meta["options"])
            tk = prepare_item(model, it, with_prefix=True)
            vals = t.candidates(it.n, **it.metadata["options"])
            ids, _ = S.candidate_token_ids(model, tk.text, tk.tokens, [str(v) for v in vals])
            ref = S.score_definition(model, tk.tokens, ids)
            ai = vals.index(it.answer)
            assert row.logp_answer == pytest.approx(float(ref[ai]), abs=1e-4)
            others = torch.cat([ref[:ai], ref[ai + 1:]])
            assert row.logit_diff == pytest.approx(float(ref[ai] - others.max()), abs=1e-4)


def test_cli_closes_only_its_own_figures(tmp_path):
    """A notebook's figures survive a tl-glasses command run from the same process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = plt.figure()
    open_before = set(plt.get_fignums())  # earlier tests in this process may have left figures open
    assert main(["tasks", "--model", "tiny:llama", "--task", "copy_last", "--lengths", "4",
                 "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    assert (tmp_path / "t" / "plot.png").exists()
    assert plt.fignum_exists(mine.number), "the user's figure was closed"
    assert set(plt.get_fignums()) == open_before, "the command's own figures are closed, no other"
    plt.close(mine)
