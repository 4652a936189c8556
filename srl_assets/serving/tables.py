"""Read-only reads of the pipeline's DuckDB tables that never hang on the pipeline's write lock.

DuckDB lets one process hold the file while it writes, so a read retries for a bounded time and then
gives up with a 503 and a retry hint. Connections are short: a reader holding the file would block
the pipeline's next write.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from srl_assets.serving.errors import ServiceUnavailable


class TableMissing(LookupError):
    """The DuckDB file or a table in it does not exist yet (the pipeline has not written it)."""


class TableReader:
    def __init__(self, path: str, timeout_s: float = 3.0):
        self.path = path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # one reader connection at a time in this process

    def rows(self, table: str, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """``sql`` over ``table`` as dicts; ``TableMissing`` when the file or table is not there."""
        if not Path(self.path).exists():
            raise TableMissing(f"DuckDB file {self.path} does not exist yet: run the pipeline first")
        with self._lock:
            conn = self._connect()
            try:
                exists = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                      [table]).fetchone()[0]
                if not exists:
                    raise TableMissing(f"table {table!r} does not exist in {self.path}: materialize its asset first")
                cursor = conn.execute(sql, params or [])
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            finally:
                conn.close()

    def readable(self) -> tuple[bool, str]:
        try:
            if not Path(self.path).exists():
                return False, f"{self.path} does not exist yet"
            with self._lock:
                self._connect().close()
            return True, self.path
        except ServiceUnavailable as exc:
            return False, exc.message

    def _connect(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(self.path, read_only=True)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() + delay > deadline:
                    raise ServiceUnavailable(
                        f"the pipeline is writing {Path(self.path).name} (DuckDB lock held); "
                        f"gave up after {self.timeout_s:g} s, retry shortly", retry_after_s=2) from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
