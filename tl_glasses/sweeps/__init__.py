"""Long runs: rows appended to disk as they are produced; rerun to resume."""
from ._store import RowStore

__all__ = ["RowStore"]
