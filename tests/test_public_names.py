"""Every tl_glasses name the docs and the README use resolves in a fresh session (issue 14:
`tg.analysis.collapse.noise_floor` used to raise AttributeError until something else had
imported the module)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\btg\.((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)")


def _documented_names() -> set[str]:
    names = set()
    for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:python|py)?\n(.*?)```", p.read_text(), re.S):
            names |= set(NAME.findall(block))
        names |= set(NAME.findall(" ".join(re.findall(r"`([^`\n]+)`", p.read_text()))))
    return names


_CHECK = """
import inspect, sys, tl_glasses as tg
bad = []
for chain in sys.argv[1:]:
    obj = tg
    for part in chain.split("."):
        if not (inspect.ismodule(obj) or inspect.isclass(obj)):
            break  # past a function: the rest is what it returns, not a module path
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            bad.append(f"tg.{chain}: {e}")
            break
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def _resolve(names) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHECK, *names], capture_output=True, text=True, cwd=REPO)


def test_every_documented_name_resolves_in_a_fresh_session():
    names = sorted(_documented_names())
    assert len(names) > 20, names
    assert "analysis.collapse.noise_floor" in names or "noise_floor" in names
    res = _resolve(names)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_check_catches_a_missing_name():
    res = _resolve(["analysis.collapse.no_such_function", "load_model"])
    assert res.returncode == 1 and "no_such_function" in res.stdout


def test_every_list_function_returns_a_table_with_a_name_column():
    import pandas as pd

    import tl_glasses as tg

    for fn in (tg.list_models, tg.list_tasks, tg.list_families, tg.list_mitigations, tg.list_metrics):
        df = fn()
        assert isinstance(df, pd.DataFrame) and "name" in df.columns and len(df), fn.__name__


def test_registries_refuse_duplicates_and_list_names_on_a_miss():
    import pytest

    import tl_glasses as tg
    from tl_glasses.analysis.patching import register_metric
    from tl_glasses.errors import GlassesError
    from tl_glasses.interventions import register_mitigation

    with pytest.raises(GlassesError, match="already registered"):
        register_metric("final_distance", "again")(lambda *a: None)
    with pytest.raises(GlassesError, match="already registered"):
        register_mitigation("separators", tg.separators)
    with pytest.raises(GlassesError, match="final_distance"):
        from tl_glasses.analysis.patching import _build_metric

        _build_metric(None, "no_such_metric", None, None, None)
