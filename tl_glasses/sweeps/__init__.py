"""Long runs: rows appended to disk as they are produced; rerun to resume."""
from ._store import RowStore, run_rows

__all__ = ["RowStore", "run_rows"]
