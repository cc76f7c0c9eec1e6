"""Append-only results on disk: written as they are produced, resumable, never mixed.

A results directory holds ``config.json`` (the configuration that produced it) and
``rows.jsonl`` (one JSON object per line). Every row is written with a single
``write`` of a complete line followed by ``fsync``: after a SIGKILL the file holds
every row completed before it, plus at most one partial final line, which is
detected (no newline) and cut off on the next open. Opening a directory written by
another configuration is refused.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from ..errors import CorruptResultsError, GlassesError, ResultsMismatchError
from ..results import _jsonable, atomic_write_text

__all__ = ["RowStore"]


def _clean(v: Any) -> Any:
    v = _jsonable(v)
    if isinstance(v, float) and not math.isfinite(v):
        return {"__float__": repr(v)}
    return v


def _unclean(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"__float__"}:
        return float(v["__float__"])
    return v


class RowStore:
    """Rows of a long run, appended to ``directory/rows.jsonl`` as they are produced."""

    def __init__(self, directory: str | os.PathLike, config: dict[str, Any], key: Iterable[str]):
        self.dir = Path(directory)
        self.key = tuple(key)
        self.config = json.loads(json.dumps(_jsonable(config), sort_keys=True))
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GlassesError(f"cannot create the results directory {str(self.dir)!r}: {exc}") from exc
        cfg_path = self.dir / "config.json"
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as exc:
                raise CorruptResultsError(
                    f"{cfg_path} is corrupt ({exc}); delete the directory {str(self.dir)!r} to start fresh"
                ) from exc
            if old != self.config:
                diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
                raise ResultsMismatchError(
                    f"the results directory {str(self.dir)!r} was written by a different configuration "
                    f"(differs in: {', '.join(diff)}); refusing to mix results. Use another output "
                    f"directory, or delete this one to start fresh"
                )
        else:
            atomic_write_text(cfg_path, json.dumps(self.config, indent=1, sort_keys=True))
        self.path = self.dir / "rows.jsonl"
        self._rows: list[dict[str, Any]] = self._read()
        self._done = {self._key_of(r) for r in self._rows}

    def _key_of(self, row: dict[str, Any]) -> tuple:
        return tuple(json.dumps(_clean(row.get(k)), sort_keys=True) for k in self.key)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A write cut short by a kill: drop the partial last line.
            cut = raw.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            raw = raw[:cut]
        rows = []
        for i, line in enumerate(raw.decode(errors="replace").splitlines()):
            if not line.strip():
                continue
            try:
                rows.append({k: _unclean(v) for k, v in json.loads(line).items()})
            except json.JSONDecodeError as exc:
                raise CorruptResultsError(
                    f"{self.path} line {i + 1} is corrupt ({exc}); delete {str(self.dir)!r} "
                    f"to start fresh, or remove that line"
                ) from exc
        return rows

    def done(self, **key_values: Any) -> bool:
        return self._key_of(key_values) in self._done

    def append(self, row: dict[str, Any]) -> None:
        k = self._key_of(row)
        if k in self._done:
            return
        line = (json.dumps({kk: _clean(v) for kk, v in row.items()}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._rows.append(row)
        self._done.add(k)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows)

    def run(self, items: Iterable[dict[str, Any]], compute: Callable[[dict[str, Any]], Iterable[dict[str, Any]] | dict[str, Any]], *, desc: str = "", progress: bool = True) -> pd.DataFrame:
        """For each item (a dict holding the key fields) not yet done, ``compute(item)``
        returns its row(s), which are appended at once. Returns all rows."""
        from tqdm.auto import tqdm

        items = list(items)
        todo = [it for it in items if not self.done(**{k: it.get(k) for k in self.key})]
        for it in tqdm(todo, desc=desc, disable=not progress or not todo, leave=False):
            out = compute(it)
            for row in [out] if isinstance(out, dict) else list(out):
                self.append({**it, **row})
        return self.dataframe()
