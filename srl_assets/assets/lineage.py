"""What an asset consumed: the upstream materialization of its own partition, as Dagster records it.

An asset reads its inputs from the record of the upstream partition's latest materialization (the
one Dagster's lineage shows: Dagster stores ``sha256(<that record's data version>)`` as the
``dagster/input_data_version/<upstream>`` tag of the new materialization), never from "the newest
catalog row". Two runs of one partition never interleave (dagster.yaml: one run per
``dagster/partition`` at a time), so that record is the one this run's upstream step wrote, or the
one the previous run of the partition left when the selection starts further down.

Tables: an asset that writes a partition of a DuckDB table records the hash of the rows it wrote as
its data version (``rows_sha256``); a consumer hashes what it reads and refuses rows that are not
the ones its upstream materialization recorded. Checkpoints: the data version is the manifest's
sha256; a consumer fetches exactly the key and digest the upstream materialization names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from resources.duckdb_store import DuckDBStore, rows_digest

DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class Upstream:
    """One upstream materialization of the consuming asset's partition."""

    asset: str
    partition: str
    storage_id: int
    run_id: str
    data_version: str | None
    metadata: dict[str, Any]  # raw values (MetadataValue.value)

    def get(self, name: str, default: Any = None) -> Any:
        return self.metadata.get(name, default)

    def summary(self) -> dict[str, Any]:
        """What the consumer's metadata names about it."""
        return {"data_version": self.data_version, "run_id": self.run_id, "storage_id": self.storage_id,
                **{k: self.metadata[k] for k in ("sha256", "checkpoint_key", "rows_sha256", "report_id")
                   if k in self.metadata}}


def _raw(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def materializations(instance: dg.DagsterInstance, asset: str, partition: str, limit: int = 1) -> list[Upstream]:
    """The newest ``limit`` materializations of one asset partition, newest first."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=limit)
    out = []
    for record in result.records:
        mat = record.asset_materialization
        out.append(Upstream(asset, partition, record.storage_id, record.run_id,
                            (mat.tags or {}).get(DATA_VERSION_TAG),
                            {k: _raw(v) for k, v in (mat.metadata or {}).items()}))
    return out


def upstream(context: dg.AssetExecutionContext, asset: str) -> Upstream:
    """The materialization of ``asset`` for this partition that this step consumes."""
    found = materializations(context.instance, asset, context.partition_key)
    if not found:
        raise LookupError(f"{asset}[{context.partition_key}] has no materialization: materialize it first")
    return found[0]


def read_table(context: dg.AssetExecutionContext, store: DuckDBStore, table: str,
               asset: str | None = None) -> tuple[pd.DataFrame, Upstream]:
    """The partition's rows of ``table``, checked against the upstream materialization that wrote
    them (``asset``, by default the table's name): other rows are an error, never used silently."""
    up = upstream(context, asset or table)
    df = store.read(table, context.partition_key)
    recorded = up.get("rows_sha256")
    if recorded is not None and rows_digest(df) != recorded:
        raise RuntimeError(
            f"{table}[{context.partition_key}] holds rows (sha256 {rows_digest(df)[:12]}) that are not the ones "
            f"its materialization in run {up.run_id} recorded ({recorded[:12]}): something wrote the table "
            f"outside that lineage; rematerialize {up.asset} for {context.partition_key}")
    return df, up


def lineage_metadata(*ups: Upstream) -> dict[str, Any]:
    """Consumer metadata: the data version (and sha256) of every materialization it read."""
    return {"lineage": dg.MetadataValue.json({u.asset: u.summary() for u in ups})}


def table_result_version(store: DuckDBStore, table: str, model_type: str) -> tuple[str, dict[str, Any]]:
    """(data version, metadata) of a table partition just written: the hash of its stored rows."""
    digest = rows_digest(store.read(table, model_type))
    return digest, {"rows_sha256": digest}
