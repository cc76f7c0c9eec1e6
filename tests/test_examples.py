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


def test_every_analyser_has_a_runnable_example():
    """Each documented analyser appears in an example that CI executes: the examples are
    collected and parametrised above, and each of these calls stands in at least one of them."""
    needed = ["collapse_sweep", "sensitivity", "path_bound", "evaluate", "patch_pair", "collapse_by_pe",
              "softmax_tv_decay", "last_token_distance"]
    text = {p.name: p.read_text() for p in EXAMPLES}
    missing = [f for f in needed if not any(f"{f}(" in t for t in text.values())]
    assert not missing, f"no example calls {missing}; examples: {sorted(text)}"
    for name, t in text.items():
        assert "# %%" in t, f"{name} is not split into notebook cells"
