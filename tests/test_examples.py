"""Every example in examples/ (jupytext percent-format .py files) is executed as a
notebook, top to bottom, in reduced sizes (TL_GLASSES_QUICK=1). A failing cell fails."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_as_a_notebook(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    assert len(nb.cells) >= 2, f"{path.name} should be split into notebook cells (# %%)"
    monkeypatch.setenv("TL_GLASSES_QUICK", "1")
    monkeypatch.setenv("TL_GLASSES_EXAMPLE_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_there_are_examples():
    assert len(EXAMPLES) >= 4
