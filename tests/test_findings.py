"""docs/findings.md, the measured section of docs/tasks.md and the comparisons of
docs/benchmarks.md are generated from the committed results in findings/: each generator,
run without a model, reproduces every block of its page."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATORS = [("findings_tables.py", "findings.md"), ("tasks_tables.py", "tasks.md"),
              ("bench_tables.py", "benchmarks.md")]
PREFIX = {"findings.md": "findings", "tasks.md": "tasks", "benchmarks.md": "bench"}


@pytest.mark.parametrize("script", [g for g, _ in GENERATORS])
def test_page_equals_the_committed_results(script):
    res = subprocess.run([sys.executable, str(REPO / "docs" / script), "--check"],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("script,page", GENERATORS)
def test_the_check_fails_when_a_number_is_changed(tmp_path, monkeypatch, script, page):
    import importlib.util

    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), REPO / "docs" / script)
    ft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ft)
    doc = tmp_path / page
    text = (REPO / "docs" / page).read_text()
    gen = ft.blocks(draw=False)
    name = next(iter(gen))
    body = gen[name].strip()
    tampered = body.replace("1", "7", 1) if "1" in body else body + " x"
    prefix = PREFIX[page]
    doc.write_text(text.replace(f"<!-- {prefix}:{name} -->\n{body}", f"<!-- {prefix}:{name} -->\n{tampered}"))
    monkeypatch.setattr(ft, "DOC", doc)
    monkeypatch.setattr(ft, "IMG", tmp_path)
    assert ft.main(["--check"]) == 1
    assert ft.main(["--write"]) == 0 and ft.main(["--check"]) == 0
