"""Where tl_glasses keeps dequantised weights and how it checks them.

Layout: ``$TL_GLASSES_CACHE`` (default ``~/.cache/tl_glasses``) / ``models`` /
``<name>-<gguf sha256[:16]>`` / {``model.safetensors``, ``config.json``,
tokenizer files, ``manifest.json``}. The manifest records the GGUF checksum, the
checksum and size of every file written, and the format version; an entry whose
manifest or files disagree is stale or corrupt and is rebuilt, never used.
"""
from __future__ import annotations

import fcntl
import hashlib
from contextlib import contextmanager
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import GlassesError

__all__ = ["cache_root", "sha256_file", "CacheEntry", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_ENV = "TL_GLASSES_CACHE"


def cache_root() -> Path:
    """The root of tl_glasses' cache (``$TL_GLASSES_CACHE`` or ``~/.cache/tl_glasses``)."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tl_glasses"


def ensure_writable(path: Path) -> Path:
    """Create ``path`` and check we can write in it, or say how to fix it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True):
            pass
    except OSError as exc:
        raise GlassesError(
            f"the cache directory {str(path)!r} is not writable ({exc.strerror or exc}); "
            f"set the environment variable {_ENV} to a writable directory, "
            f"e.g. `export {_ENV}=/tmp/tl_glasses_cache`"
        ) from exc
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class CacheEntry:
    """One cached, dequantised model: a directory with a manifest of checksums."""

    def __init__(self, name: str, source_sha256: str, root: Path | None = None):
        self.name = name
        self.source_sha256 = source_sha256
        self.root = (root or cache_root()) / "models"
        self.path = self.root / f"{name}-{source_sha256[:16]}"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def status(self) -> str:
        """``"missing"``, ``"valid"``, or a sentence saying what is wrong."""
        if not self.manifest_path.exists():
            return "missing"
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            return "manifest unreadable"
        if manifest.get("format_version") != FORMAT_VERSION:
            return "written by another tl_glasses cache format"
        if manifest.get("source_sha256") != self.source_sha256:
            return "built from a different GGUF file"
        for rel, meta in manifest.get("files", {}).items():
            p = self.path / rel
            if not p.exists():
                return f"{rel} is missing"
            if p.stat().st_size != meta["size"]:
                return f"{rel} has the wrong size (truncated or altered)"
            if sha256_file(p) != meta["sha256"]:
                return f"{rel} fails its checksum (corrupt)"
        return "valid"

    def is_valid(self) -> bool:
        return self.status() == "valid"

    def write(self, fill) -> None:
        """Build the entry atomically: ``fill(tmpdir)`` writes files, then a manifest
        with their checksums is added and the directory is moved into place."""
        ensure_writable(self.root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}-", dir=self.root))
        try:
            fill(tmp)
            files = {}
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    rel = str(p.relative_to(tmp))
                    files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "source_sha256": self.source_sha256,
                "files": files,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @contextmanager
    def lock(self):
        """An exclusive lock (fcntl) serialising builders of this entry across processes."""
        ensure_writable(self.root)
        with open(self.root / f".{self.path.name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
