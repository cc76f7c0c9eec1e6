"""Append-only results on disk: written as they are produced, resumable, never mixed;
and the one loop every sweep runs over them (:func:`run_rows`, :meth:`RowStore.run`).

A results directory holds ``config.json`` (the configuration that produced it) and
``rows.jsonl`` (one JSON object per line). Every row is written with a single
``write`` of a complete line followed by ``fsync``: after a SIGKILL the file holds
every row completed before it, plus at most one partial final line, which is
detected (no newline) and cut off on the next open. Opening a directory written by
another configuration is refused. Without a directory (``RowStore(None, ...)``) the
rows are kept in memory only: the same loop, nothing written.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from ..errors import CorruptResultsError, GlassesError, ResultsMismatchError
from ..results import _jsonable, atomic_write_text

__all__ = ["RowStore", "run_rows"]


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
    """Rows of a long run, appended to ``directory/rows.jsonl`` as they are produced
    (``directory=None``: kept in memory, nothing written), one row per key."""

    def __init__(self, directory: str | os.PathLike | None, config: dict[str, Any], key: Iterable[str]):
        self.dir = None if directory is None else Path(directory)
        self.key = tuple(key)
        self.config = json.loads(json.dumps(_jsonable(config), sort_keys=True))
        self.path = None if self.dir is None else self.dir / "rows.jsonl"
        if self.dir is not None:
            self._open_dir()
        self._rows: list[dict[str, Any]] = self._read()
        self._by_key: dict[tuple, dict[str, Any]] = {}
        for r in self._rows:
            self._by_key.setdefault(self._key_of(r), r)

    def _open_dir(self) -> None:
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

    def _key_of(self, row: dict[str, Any]) -> tuple:
        return tuple(json.dumps(_clean(row.get(k)), sort_keys=True) for k in self.key)

    def _read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
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
        return self._key_of(key_values) in self._by_key

    def append(self, row: dict[str, Any]) -> None:
        """Keep ``row`` (written and fsync'd first, with a directory); a row whose key
        is already held is ignored."""
        k = self._key_of(row)
        if k in self._by_key:
            return
        if self.path is not None:
            line = (json.dumps({kk: _clean(v) for kk, v in row.items()}) + "\n").encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._rows.append(row)
        self._by_key[k] = row

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row held, in the order written (rows of earlier runs first)."""
        return list(self._rows)

    def dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows)

    def _unique(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        seen, out = set(), []
        for it in items:
            k = self._key_of(it)
            if k not in seen:
                seen.add(k)
                out.append(it)
        return out

    def pending(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items (dicts holding the key fields) with no row yet, in their order,
        one per key."""
        return [it for it in self._unique(items) if self._key_of(it) not in self._by_key]

    def select(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of exactly these items: one per key, in the items' order (rows an
        earlier run with more items left in the store are not included)."""
        out = []
        for it in self._unique(items):
            k = self._key_of(it)
            if k not in self._by_key:
                raise GlassesError(f"no row for {dict(zip(self.key, (it.get(c) for c in self.key)))}")
            out.append(self._by_key[k])
        return out

    def run(self, items: Iterable[dict[str, Any]], compute: Callable[[Any], Any], *, desc: str = "",
            progress: bool = True, batch: int | None = None) -> pd.DataFrame:
        """Compute the rows of ``items`` not yet held and return the rows of exactly
        ``items`` (see :meth:`select`).

        Each item is a dict holding the key fields (and whatever else the row should
        start with); its row is ``{**item, **compute(item)}``, appended as soon as it is
        computed. ``batch=k``: ``compute`` takes a list of up to ``k`` pending items and
        returns one row per item, in order (one model call for several items). A
        progress bar (one step per call of ``compute``) is shown while something is to
        be computed and ``progress`` is true.
        """
        from tqdm.auto import tqdm

        items = list(items)
        todo = self.pending(items)
        step = None if batch is None else max(1, int(batch))
        chunks = [[it] for it in todo] if step is None else [todo[s: s + step] for s in range(0, len(todo), step)]
        for chunk in tqdm(chunks, desc=desc, disable=not progress or not chunks, leave=False):
            got = [compute(chunk[0])] if step is None else list(compute(chunk))
            if len(got) != len(chunk) or not all(isinstance(g, dict) for g in got):
                raise GlassesError(f"compute must return one row (a dict) per item; got {len(got)} "
                                   f"for {len(chunk)} item(s)")
            for it, r in zip(chunk, got):
                row = {**it, **r}
                if self._key_of(row) != self._key_of(it):
                    raise GlassesError(f"compute changed a key field ({', '.join(self.key)}) of {it}")
                self.append(row)
        return pd.DataFrame(self.select(items))


def run_rows(items: Iterable[dict[str, Any]], compute: Callable[[Any], Any], *, config: dict[str, Any],
             key: Sequence[str], out: str | os.PathLike | None = None, desc: str = "", progress: bool = True,
             batch: int | None = None) -> pd.DataFrame:
    """The one sweep loop: the rows of exactly ``items``, one per key, in their order.

    ``out``: a results directory (rows appended and fsync'd as produced; a rerun
    resumes, computing only the missing rows; a directory written by another
    ``config`` raises :class:`~tl_glasses.errors.ResultsMismatchError`), or ``None``
    (rows kept in memory). ``compute``, ``batch``, ``desc``, ``progress``: see
    :meth:`RowStore.run`.
    """
    store = RowStore(out, config, key)
    return store.run(items, compute, desc=desc, progress=progress, batch=batch)
