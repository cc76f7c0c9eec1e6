"""Safety (issue 9): nothing in the package unpickles (torch.load, pickle, joblib,
numpy allow_pickle, weights_only=False), weights come from safetensors/GGUF, and saved
results hold no pickle (Parquet/JSON/safetensors only)."""
from __future__ import annotations

import re
from pathlib import Path

import tl_glasses as tg

PKG = Path(tg.__file__).parent
UNSAFE = re.compile(
    r"torch\.load\s*\(|\bimport\s+pickle\b|\bfrom\s+pickle\b|pickle\.loads?\s*\(|\bdill\b|\bjoblib\b|"
    r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|\bcloudpickle\b|use_safetensors\s*=\s*False"
)
# documented exceptions: file -> reason (none today)
ALLOWED: dict[str, str] = {}


def test_no_unpickling_in_the_package():
    hits = []
    for p in sorted(PKG.rglob("*.py")):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if UNSAFE.search(code) and str(p.relative_to(PKG)) not in ALLOWED:
                hits.append(f"{p.relative_to(PKG)}:{i}: {line.strip()}")
    assert not hits, "unsafe deserialisation:\n" + "\n".join(hits)


def test_the_regex_catches_what_it_should():
    for bad in ["x = torch.load(f)", "import pickle", "torch.load(p, weights_only=False)",
                "np.load(f, allow_pickle=True)", "from pickle import loads"]:
        assert UNSAFE.search(bad), bad
    assert not UNSAFE.search("safetensors.torch.load_file(p)")


PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def test_saved_results_hold_no_pickle(tmp_path):
    m = tg.tiny_model("llama", n_ctx=64)
    out = tmp_path / "sweep"
    tg.collapse_sweep(m, "ones", [2, 3], out=out, progress=False)
    tg.path_bound(m, "11111").save(tmp_path / "pb")
    tg.sensitivity(m, "1111").save(tmp_path / "sens")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert p.suffix in {".parquet", ".json", ".jsonl", ".safetensors", ".csv", ".png", ".svg", ".html"}, p
        head = p.read_bytes()[:2]
        assert head not in PICKLE_MAGIC, p
        if p.suffix == ".parquet":  # pandas may embed pickled python objects in metadata: never here
            import pyarrow.parquet as pq

            md = pq.read_schema(p).metadata or {}
            assert not any(b"pickle" in v.lower() for v in md.values()), p
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(p)  # parses as safetensors


def test_model_cache_is_safetensors_with_checksums():
    from tl_glasses.models import _cache

    src = Path(_cache.__file__).read_text()
    assert "sha256" in src and "safetensors" in src
