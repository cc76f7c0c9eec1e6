"""load_model / wrap_model / list_models."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import GlassesError, ModelNotAvailableError, UnknownNameError
from ._cache import CacheEntry, cache_root, sha256_file
from ._embedded import EMBEDDED, EmbeddedModel

__all__ = ["load_model", "load_hf", "wrap_model", "list_models", "model_info"]

log = logging.getLogger("tl_glasses")

from .._vocab import DTYPES as _DTYPES, parse_dtype  # noqa: E402


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32`` or one of the names fp32/fp16/bf16/fp64."""
    return parse_dtype(dtype)


def _check_dtype_runs(dtype: torch.dtype, device: str) -> None:
    try:
        a = torch.ones(2, 2, dtype=dtype, device=device)
        (a @ a).sum().item()
    except (RuntimeError, TypeError, AssertionError) as exc:  # AssertionError: torch built without that device
        raise GlassesError(
            f"dtype {dtype} cannot run matrix products on device {device!r} ({exc}); "
            f"use torch.float32 there, or another device"
        ) from exc


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # re-enabled while dequantising
    warnings.filterwarnings("ignore", message=".*generation flags.*")


def _bridge_metadata(bridge, **info) -> None:
    # A plain dict attribute: visible to users, ignored by torch (not a Module/Parameter).
    bridge.__dict__["tl_glasses_info"] = dict(info)


def model_info(model) -> dict[str, Any]:
    """What tl_glasses knows about a model it loaded (name, source, dtype…)."""
    return dict(getattr(model, "tl_glasses_info", {}) or {})


def wrap_model(hf_model, tokenizer, *, name: str | None = None):
    """Wrap an already-built ``transformers`` causal LM and its tokenizer as a
    TransformerBridge (eager attention, eval mode), so users bring their own models.

    The bridge rewires ``hf_model`` in place: afterwards, calling ``hf_model``
    itself runs through the bridge. Keep an unwrapped copy if you need one.
    """
    from transformer_lens.model_bridge import TransformerBridge

    _quiet_transformers()
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    name = name or getattr(hf_model.config, "_name_or_path", None) or type(hf_model).__name__
    hf_model.eval()
    bridge = TransformerBridge.boot_transformers(str(name), hf_model=hf_model, tokenizer=tokenizer)
    bridge.eval()
    dtype = next(hf_model.parameters()).dtype
    _bridge_metadata(bridge, name=str(name), source="user", dtype=str(dtype))
    return bridge


def _build_cache_entry(m: EmbeddedModel, gguf: Path, entry: CacheEntry) -> None:
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning(
        "tl_glasses: dequantising %s once (GGUF -> safetensors cache at %s); "
        "later loads read the cache", m.name, entry.path,
    )

    import transformers

    def fill(tmp: Path) -> None:
        transformers.utils.logging.enable_progress_bar()  # dequantising takes a while
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
        )
        model.config.architectures = [type(model).__name__]
        # The GGUF config keeps a quantization_config pointing at the GGUF; the
        # cached weights are plain dequantised tensors.
        # (save_pretrained refuses GGUF-loaded models, so write config + weights directly).
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._name_or_path = m.hf_id
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # de-duplicates tied weights
        tok.save_pretrained(tmp)
        transformers.utils.logging.disable_progress_bar()

    entry.write(fill)


def _load_embedded(m: EmbeddedModel, dtype: torch.dtype, device: str, rebuild: bool, **load_kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry, gguf = _ensure_cached(m, rebuild)
    tok = AutoTokenizer.from_pretrained(entry.path)
    kw: dict[str, Any] = dict(dtype=dtype, attn_implementation="eager")
    if load_kw:
        kw.update(load_kw)
    hf_model = AutoModelForCausalLM.from_pretrained(entry.path, **kw)
    if not load_kw.get("device_map"):
        hf_model = hf_model.to(device)
    bridge = wrap_model(hf_model, tok, name=m.hf_id)
    _bridge_metadata(
        bridge, name=m.name, source="embedded", hf_id=m.hf_id, gguf=str(gguf),
        gguf_sha256=entry.source_sha256, cache=str(entry.path), dtype=str(dtype),
    )
    return bridge


def _ensure_cached(m: EmbeddedModel, rebuild: bool) -> tuple[CacheEntry, Path]:
    """A valid cache entry for ``m`` (built if needed) and the GGUF it came from."""
    gguf, sha = m.gguf_path()
    sha = sha or sha256_file(gguf)
    entry = CacheEntry(m.name, sha)
    status = entry.status()
    if rebuild or status != "valid":
        with entry.lock():  # one builder at a time; others wait, then find it valid
            status = "rebuild" if rebuild else entry.status()
            if status != "valid":
                if status not in ("missing", "rebuild"):
                    log.warning("tl_glasses: cache entry %s is invalid (%s); rebuilding", entry.path, status)
                entry.remove()
                _build_cache_entry(m, gguf, entry)
    return entry, gguf


def load_hf(name: str = "gemma-3-270m", *, dtype: torch.dtype | str = torch.float32,
            attn_implementation: str = "eager"):
    """The plain, unwrapped ``transformers`` model and tokenizer of an embedded model,
    from the same cache as :func:`load_model`: the independent reference that tests
    and benchmarks compare the bridge with (a bridge rewires the model it wraps)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = name.lower()
    if key not in EMBEDDED:
        from ..errors import UnknownNameError

        raise UnknownNameError("embedded model", name, list(EMBEDDED))
    entry, _ = _ensure_cached(EMBEDDED[key], rebuild=False)
    tok = AutoTokenizer.from_pretrained(entry.path)
    model = AutoModelForCausalLM.from_pretrained(
        entry.path, dtype=resolve_dtype(dtype), attn_implementation=attn_implementation
    )
    return model.eval(), tok


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


TINY_ARCHS = ("llama", "gemma3", "gpt2")


def _tiny_by_name(name: str, dtype: torch.dtype, device: str):
    """``"tiny:ARCH"`` (or ``"tiny-ARCH"``): the seeded tiny random model of
    :func:`tiny_model`, for smoke runs of the CLI and the report. ``tiny:gemma3`` gets
    three layers so that it has one global layer after two local ones, like Gemma 3."""
    from ._tiny import tiny_model

    arch = name[5:]
    if arch not in TINY_ARCHS:
        raise UnknownNameError("tiny model architecture", arch, list(TINY_ARCHS))
    kw = {"n_layers": 3} if arch == "gemma3" else {}
    return tiny_model(arch, seed=0, dtype=dtype, **kw).to(device)


def load_model(
    name: str = "gemma-3-270m",
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str = "cpu",
    tokenizer=None,
    rebuild_cache: bool = False,
    device_map: str | dict | None = None,
    n_devices: int | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
):
    """Load a model as a TransformerLens ``TransformerBridge`` with eager attention,
    in eval mode, ready for hooks.

    ``name`` is one of the embedded models (``list_models()``: ``"gemma-3-270m"``,
    the default, and ``"smollm2-135m"``), which need no network; or any Hugging
    Face model name when the Hub is reachable (or already in the local HF cache);
    or ``"tiny:llama"`` / ``"tiny:gemma3"`` / ``"tiny:gpt2"`` (a seeded tiny random
    model, :func:`tiny_model`: for smoke runs, says nothing about language models);
    or a ``transformers`` model, with ``tokenizer=`` given, to wrap as it is.

    Embedded models are dequantised from GGUF once and cached as checksummed
    safetensors under ``$TL_GLASSES_CACHE`` (default ``~/.cache/tl_glasses``).

    ``device_map`` / ``n_devices`` / ``max_memory`` / ``offload_folder`` are passed
    to ``transformers``/accelerate for models larger than one device.
    """
    dtype = resolve_dtype(dtype)
    _check_dtype_runs(dtype, device if device_map is None else "cpu")
    _quiet_transformers()
    if isinstance(name, str) and name.startswith(("tiny:", "tiny-")):
        return _tiny_by_name(name, dtype, device)
    if not isinstance(name, str):
        if tokenizer is None:
            raise GlassesError(
                "load_model(model) with a transformers model needs its tokenizer: "
                "load_model(hf_model, tokenizer=tok)"
            )
        return wrap_model(name.to(dtype=dtype), tokenizer)
    load_kw = {
        k: v
        for k, v in dict(
            device_map=device_map, max_memory=max_memory, offload_folder=offload_folder
        ).items()
        if v is not None
    }
    if n_devices is not None and n_devices > 1:
        if not torch.cuda.is_available() or torch.cuda.device_count() < n_devices:
            raise GlassesError(
                f"n_devices={n_devices} needs that many CUDA devices; this machine has "
                f"{torch.cuda.device_count()}. Use device_map= (e.g. a dict placing layers on "
                f"'cpu' and 'disk' with offload_folder=) to split over CPU memory and disk"
            )
        load_kw.setdefault("device_map", "auto")
    key = name.lower()
    if key in EMBEDDED:
        return _load_embedded(EMBEDDED[key], dtype, device, rebuild_cache, **load_kw)
    return _load_hub(name, dtype, device, **load_kw)


def _load_hub(name: str, dtype, device, **load_kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    known = ", ".join(f"{n!r} ({m.install})" for n, m in EMBEDDED.items())
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=_offline())
        hf_model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, attn_implementation="eager", local_files_only=_offline(), **load_kw
        )
    except (OSError, ValueError) as exc:
        where = "offline (HF_HUB_OFFLINE=1) and not in the local Hugging Face cache" if _offline() \
            else "not found on the Hugging Face Hub, or the Hub is unreachable"
        raise ModelNotAvailableError(
            f"model {name!r} is {where}. Models that need no network: {known}. "
            f"Or build a transformers model yourself and call tl_glasses.wrap_model(model, tokenizer)."
        ) from exc
    if not load_kw.get("device_map"):
        hf_model = hf_model.to(device)
    bridge = wrap_model(hf_model, tok, name=name)
    _bridge_metadata(bridge, name=name, source="hub", dtype=str(dtype))
    return bridge


def list_models():
    """The embedded models: name, size, whether installed, whether cached, license."""
    import pandas as pd

    rows = []
    for m in EMBEDDED.values():
        installed, cached, cache_path = m.installed(), False, None
        if installed:
            d = cache_root() / "models"
            hits = sorted(d.glob(f"{m.name}-*")) if d.exists() else []
            for h in hits:
                if (h / "manifest.json").exists():
                    cached, cache_path = True, str(h)
        rows.append(
            dict(
                name=m.name, params=m.params, description=m.description, hf_id=m.hf_id,
                installed=installed, cached=cached, install=m.install, license=m.license,
                quantisation=m.quant, cache=cache_path,
            )
        )
    return pd.DataFrame(rows)
