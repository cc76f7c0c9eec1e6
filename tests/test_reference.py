"""The frozen reference (issue 14): what the analysers gave on the seeded tiny models when
tests/reference/tiny.json was written. A refactor must reproduce it; a deliberate change
of a definition rewrites the file (python tests/reference/make_reference.py) and says why
in its commit."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "reference"


@pytest.fixture(scope="module")
def now() -> dict[str, list[float]]:
    spec = importlib.util.spec_from_file_location("make_reference", HERE / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.compute()


REF = json.loads((HERE / "tiny.json").read_text())


@pytest.mark.parametrize("key", sorted(REF))
def test_reproduces_the_frozen_reference(now, key):
    ref, got = REF[key], now[key]
    assert len(got) == len(ref), f"{key}: {len(got)} values, the reference has {len(ref)}"
    assert ref, f"{key}: the reference is empty; a reference that holds nothing cannot fail"
    for i, (a, b) in enumerate(zip(ref, got)):
        if math.isnan(a):
            assert math.isnan(b), f"{key}[{i}]: reference NaN, now {b}"
            continue
        assert b == pytest.approx(a, rel=1e-5, abs=1e-9), f"{key}[{i}]: reference {a}, now {b}"


def test_the_comparison_catches_a_change(now):
    key = "llama/sensitivity/jacobian"
    moved = [x * (1 + 1e-3) for x in REF[key]]
    assert any(b != pytest.approx(a, rel=1e-5, abs=1e-9) for a, b in zip(moved, now[key]))
