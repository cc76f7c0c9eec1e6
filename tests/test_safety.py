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


def test_model_cache_is_safetensors_with_checksums(smollm2):
    """The embedded model's cache entry holds weights as safetensors only (no pickled
    .bin/.pt/.pkl), its manifest records the sha256 of every file it holds and each equals
    the file's own; one flipped byte makes the entry invalid (and load_model rebuilds such an
    entry: tests/test_models.py::test_corrupted_cache_is_detected_and_rebuilt)."""
    import json
    import shutil

    from tl_glasses.models._cache import CacheEntry, sha256_file

    root = Path(tg.model_info(smollm2)["cache"])
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))], files
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["files"]) == files - {"manifest.json"}
    for rel, meta in manifest["files"].items():
        assert meta["sha256"] == sha256_file(root / rel), rel
    # a copy of the entry with one byte flipped in the middle of the weights is not valid
    copy = Path(tg.models.cache_root()) / "test-safety-copy"
    shutil.rmtree(copy, ignore_errors=True)
    entry = CacheEntry(root.name.rsplit("-", 1)[0], manifest["source_sha256"], root=copy)
    shutil.copytree(root, entry.path)
    try:
        assert entry.status() == "valid"
        w = entry.path / "model.safetensors"
        with open(w, "r+b") as f:
            f.seek(w.stat().st_size // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        assert entry.status() != "valid"
    finally:
        shutil.rmtree(copy, ignore_errors=True)