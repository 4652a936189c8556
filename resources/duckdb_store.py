"""DuckDBStore: every table of the platform in one embedded DuckDB file under the Dagster home.

DuckDB lets one process hold the file at a time (readers included), so each call opens a short
connection and retries while another process holds the lock; writers also run in the ``duckdb``
pool (limit 1 in dagster.yaml). A partition's rows are replaced in one transaction, so a failure
never leaves half a partition behind and no row is lost when seven partitions run at once.

Built on ``dagster_duckdb.DuckDBResource`` (its ``database`` and ``connection_config`` fields and its
``get_connection()`` for writes). What stays hand-written, and why the libraries do not do it:
* waiting for the lock: ``get_connection()`` gives up after 10 retries (about 100 s), while one
  partition's writer may hold the file for minutes during a seven-partition backfill; and it cannot
  open a read-only connection;
* ``replace_partition``/``read``: ``dagster_duckdb_pandas``'s IO manager stores an asset's output in
  a table of its own schema (``public.<asset>``) and loads it whole as the downstream input; here the
  tables keep the names and schema (``main``) that DuckDB files written by earlier versions have, the
  serving API and the sensors read them directly, consumers check the rows against their lineage
  (``rows_digest``), and several assets write or read one table (``checkpoints``, reports);
* schema evolution: a column a newer version writes is added to an older file's table
  (``ALTER TABLE ... ADD COLUMN``), never assumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import time
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"invalid table name {name!r}")
    return name


def _canonical(value: Any) -> Any:
    """A value's stable text for hashing (DuckDB returns lists as numpy arrays)."""
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    return json.dumps(value, sort_keys=True, default=str)


# Bookkeeping columns (when and by which run a row was written) are not content: the same rows written
# again are the same data version, so nothing downstream goes stale for a rerun that changed nothing.
BOOKKEEPING_COLUMNS = frozenset({"run_id", "created_at", "detected_at"})


def rows_digest(df: pd.DataFrame) -> str:
    """sha256 of a table partition's content: independent of row order, of the bookkeeping columns,
    and of columns that are null in every row (what ``ALTER TABLE ... ADD COLUMN`` adds to rows an
    older version wrote)."""
    columns = sorted(c for c in df.columns if c not in BOOKKEEPING_COLUMNS and not df[c].isna().all())
    digest = hashlib.sha256("\x1f".join(columns).encode())
    if columns and len(df):
        frame = df[columns].copy()
        for c in columns:
            if frame[c].dtype == object:
                frame[c] = frame[c].map(_canonical)
        row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        row_hashes.sort()
        digest.update(row_hashes.tobytes())
    return digest.hexdigest()


class DuckDBStore(DuckDBResource):
    """Tables keyed by ``model_type``; one DuckDB file."""

    database: str = Field(description="Path of the DuckDB file (created on first write).")
    lock_timeout_s: float = Field(default=600.0, description="How long to wait for another process's lock.")

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        read_only = read_only and Path(self.database).exists()
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            stack = contextlib.ExitStack()
            try:
                if read_only:  # DuckDBResource opens read-write only
                    conn = duckdb.connect(self.database, read_only=True, config=self.connection_config)
                else:  # DuckDBResource's own connection (and its short back-off)
                    conn = stack.enter_context(self.get_connection())
                break
            except duckdb.IOException as exc:
                stack.close()
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        try:
            yield conn
        finally:
            conn.close()  # get_connection() closes only when its body succeeds
            stack.close()

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
                self._add_missing_columns(conn, table)
                if replace_model_type is not None:
                    conn.execute(f"DELETE FROM {table} WHERE model_type = ?", [replace_model_type])
                conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                conn.execute("COMMIT")
            except Exception:
                conn.execute("ROLLBACK")
                raise
        return len(df)

    @staticmethod
    def _add_missing_columns(conn: duckdb.DuckDBPyConnection, table: str) -> None:
        """Columns of the incoming rows that the stored table (maybe written by an older version) lacks."""
        have = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
        for name, dtype, *_ in conn.execute("DESCRIBE incoming").fetchall():
            if name not in have:
                _ident(name.lower())
                conn.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {dtype}')

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
