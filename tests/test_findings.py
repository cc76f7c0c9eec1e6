"""docs/findings.md is generated from the committed results in findings/ (issue 13): the
generator, run without a model, reproduces every block of the page."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_findings_page_equals_the_committed_results():
    res = subprocess.run([sys.executable, str(REPO / "docs" / "findings_tables.py"), "--check"],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_check_fails_when_a_number_is_changed(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings_tables", REPO / "docs" / "findings_tables.py")
    ft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ft)
    doc = tmp_path / "findings.md"
    text = (REPO / "docs" / "findings.md").read_text()
    gen = ft.blocks(draw=False)
    name = next(iter(gen))
    body = gen[name]
    tampered = body.replace("1", "7", 1) if "1" in body else body + " x"
    doc.write_text(text.replace(f"<!-- findings:{name} -->\n{body}", f"<!-- findings:{name} -->\n{tampered}"))
    monkeypatch.setattr(ft, "DOC", doc)
    monkeypatch.setattr(ft, "IMG", tmp_path)
    assert ft.main(["--check"]) == 1
    assert ft.main(["--write"]) == 0 and ft.main(["--check"]) == 0
