"""Result objects: a tidy DataFrame, metadata, optional tensors; save/load in safe
formats (Parquet or CSV, JSON, safetensors — never pickle); rich display."""
from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from .errors import CorruptResultsError

__all__ = ["Result", "atomic_write_bytes", "atomic_write_text", "figure_to_png", "register_result"]

_REGISTRY: dict[str, type["Result"]] = {}


def register_result(cls):
    """Class decorator: lets :meth:`Result.load` rebuild the right subclass."""
    _REGISTRY[cls.__name__] = cls
    return cls


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def figure_to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.dtype):
        return str(x)
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        try:
            return x.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


@dataclass(repr=False)
class Result:
    """Base of every result: ``df`` (tidy, one row per measurement), ``meta``
    (what was run: model, prompt, options, versions) and named ``tensors``.

    Subclasses add properties and a ``plot()``; ``save``/``load`` round-trip all three.
    """

    df: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    title: ClassVar[str] = "result"

    def to_dataframe(self) -> pd.DataFrame:
        return self.df.copy()

    # -- persistence -------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/`` with ``data.parquet``, ``meta.json`` and ``tensors.safetensors``."""
        from safetensors.torch import save as st_save

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        self.df.to_parquet(buf, index=False)
        atomic_write_bytes(path / "data.parquet", buf.getvalue())
        if self.tensors:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
            atomic_write_bytes(path / "tensors.safetensors", st_save(tensors))
        meta = {"class": type(self).__name__, "module": type(self).__module__, "meta": _jsonable(self.meta)}
        atomic_write_text(path / "meta.json", json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Result":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
            df = pd.read_parquet(path / "data.parquet")
            tensors = load_file(path / "tensors.safetensors") if (path / "tensors.safetensors").exists() else {}
        except FileNotFoundError as exc:
            raise CorruptResultsError(f"{path} is not a saved tl_glasses result: {exc}") from exc
        except (json.JSONDecodeError, OSError, ValueError, SafetensorError) as exc:
            raise CorruptResultsError(
                f"the saved result at {path} is corrupt or truncated ({exc}); delete it and rerun"
            ) from exc
        if meta.get("class") not in _REGISTRY and str(meta.get("module", "")).startswith("tl_glasses."):
            import importlib

            try:  # registering happens when the defining module is imported
                importlib.import_module(meta["module"])
            except ImportError:
                pass
        klass = _REGISTRY.get(meta.get("class"), cls)
        if cls is not Result and not issubclass(klass, cls):
            klass = cls
        return klass.from_frame(df, meta.get("meta", {}), tensors)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, meta: dict[str, Any] | None = None,
                   tensors: dict[str, torch.Tensor] | None = None) -> "Result":
        """Build the result from what :meth:`save` wrote (:meth:`load` calls this; a
        subclass whose fields are not ``df``/``meta``/``tensors`` overrides it)."""
        return cls(df=df, meta=dict(meta or {}), tensors=dict(tensors or {}))

    # -- display ----------------------------------------------------------------
    def summary(self) -> str:
        """One or two lines saying what was measured; subclasses override."""
        return f"{len(self.df)} rows"

    def __repr__(self) -> str:
        model = self.meta.get("model", "?")
        return f"<{type(self).__name__} model={model!r}: {self.summary()}>"

    def plot(self, ax=None):  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} has no plot")

    def _repr_html_(self) -> str:
        html = [f"<div><b>{type(self).__name__}</b> — {self.summary()}</div>"]
        try:
            fig = self.plot()
            fig = getattr(fig, "figure", fig)
            png = base64.b64encode(figure_to_png(fig)).decode()
            html.append(f'<img src="data:image/png;base64,{png}"/>')
        except Exception as exc:  # a display must never raise in a notebook
            html.append(f"<div><i>(no figure: {exc})</i></div>")
        html.append(self.df.head(20).to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(html)
