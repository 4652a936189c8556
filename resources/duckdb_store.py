"""DuckDBStore: every table of the platform in one embedded DuckDB file under the Dagster home.

DuckDB lets one process hold the file at a time (readers included), so each call opens a short
connection and retries while another process holds the lock; writers also run in the ``duckdb``
pool (limit 1 in dagster.yaml). A partition's rows are replaced in one transaction, so a failure
never leaves half a partition behind and no row is lost when seven partitions run at once.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"invalid table name {name!r}")
    return name


class DuckDBStore(dg.ConfigurableResource):
    """Tables keyed by ``model_type``; one DuckDB file."""

    database: str = Field(description="Path of the DuckDB file (created on first write).")
    lock_timeout_s: float = Field(default=600.0, description="How long to wait for another process's lock.")

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                conn = duckdb.connect(self.database, read_only=read_only and Path(self.database).exists())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        try:
            yield conn
        finally:
            conn.close()

    def replace_partition(self, table: str, model_type: str, df: pd.DataFrame) -> int:
        """Atomically replace every row of ``model_type`` in ``table`` with ``df``."""
        if "model_type" not in df.columns or set(df["model_type"]) - {model_type}:
            raise ValueError(f"{table}: every row must have model_type={model_type!r}")
        return self._write(table, df, replace_model_type=model_type)

    def append(self, table: str, df: pd.DataFrame) -> int:
        return self._write(table, df)

    def _write(self, table: str, df: pd.DataFrame, replace_model_type: str | None = None) -> int:
        """Create the table from ``df``'s schema if needed, then write in one transaction."""
        table = _ident(table)
        with self.connect() as conn:
            conn.register("incoming", df)
            conn.execute("BEGIN TRANSACTION")
            try:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming LIMIT 0")
                if replace_model_type is not None:
                    conn.execute(f"DELETE FROM {table} WHERE model_type = ?", [replace_model_type])
                conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                conn.execute("COMMIT")
            except Exception:
                conn.execute("ROLLBACK")
                raise
        return len(df)

    def read(self, table: str, model_type: str | None = None, where: str = "",
             params: list[Any] | None = None) -> pd.DataFrame:
        """Rows of ``table`` (for one model type); a table that does not exist yet is an error."""
        table = _ident(table)
        clauses, args = [], list(params or [])
        if model_type is not None:
            clauses.append("model_type = ?")
            args.insert(0, model_type)
        if where:
            clauses.append(f"({where})")
        sql = f"SELECT * FROM {table}" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        with self.connect(read_only=True) as conn:
            if not self._exists(conn, table):
                raise LookupError(f"table {table!r} does not exist in {self.database}: "
                                  f"materialize its asset first")
            return conn.execute(sql, args).df()

    def table_exists(self, table: str) -> bool:
        with self.connect(read_only=True) as conn:
            return self._exists(conn, _ident(table))

    @staticmethod
    def _exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
        return bool(conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                 [table]).fetchone()[0])
