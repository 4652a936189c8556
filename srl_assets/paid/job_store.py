"""Hosted fine-tuning jobs recorded in DuckDB, and the submit / refresh / register steps around them.

Why the intent is written first: a process can die between the provider's create call and the
write that records its answer. The idempotency key is a hash of everything that defines the job
(model type, provider, base model, method, dataset bytes, hyperparameters), is written to the
``paid_finetune_jobs`` table *before* create, and is sent with the job (OpenAI ``metadata``,
Vertex ``labels``, Bedrock ``clientRequestToken``). A retried op recomputes the same key, finds
the intent row without a job id, asks the provider for a job carrying the key, and records that
one instead of creating a second job (and paying twice).

The store takes any object with a DuckDBStore-like ``connect()`` context manager; no Dagster here.
No secret is ever written: rows hold ids, states, provider error text and dollars only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from srl_assets.paid.base import (CostEstimate, DatasetSource, JobStatus, PaidFineTuner, ProviderRefused,
                                  SpendCapExceeded, TunedModel)
from srl_assets.paid.datasets import to_jsonl, write_jsonl
from srl_assets.paid.prices import training_cost

JOBS_TABLE = "paid_finetune_jobs"
CANDIDATES_TABLE = "paid_candidates"
# Rows whose spend counts towards the cumulative cap: everything that reached (or may have reached) a
# provider. Failed and cancelled jobs count at their estimate unless measured: conservative on purpose.
SPENDING = ("intent", "submitted", "queued", "running", "unknown", "succeeded", "registered", "failed", "cancelled")
PENDING = ("submitted", "queued", "running", "unknown")

_JOB_COLUMNS = {
    "idempotency_key": "VARCHAR PRIMARY KEY", "model_type": "VARCHAR", "provider": "VARCHAR",
    "base_model": "VARCHAR", "method": "VARCHAR", "status": "VARCHAR", "provider_state": "VARCHAR",
    "job_id": "VARCHAR", "training_uri": "VARCHAR", "dataset_path": "VARCHAR", "dataset_sha256": "VARCHAR",
    "n_examples": "INTEGER", "estimate_usd": "DOUBLE", "measured_usd": "DOUBLE", "trained_tokens": "BIGINT",
    "tuned_model": "VARCHAR", "error": "VARCHAR", "hyperparameters": "VARCHAR", "price_version": "VARCHAR",
    "created_at": "VARCHAR", "updated_at": "VARCHAR",
}
_CANDIDATE_COLUMNS = {
    "model_type": "VARCHAR", "candidate": "VARCHAR", "provider": "VARCHAR", "model_id": "VARCHAR",
    "base_model": "VARCHAR", "method": "VARCHAR", "job_id": "VARCHAR", "input_per_1k_usd": "DOUBLE",
    "output_per_1k_usd": "DOUBLE", "hosting_per_hour_usd": "DOUBLE", "registered_at": "VARCHAR",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def idempotency_key(model_type: str, provider: str, base_model: str, method: str, dataset: bytes,
                    hyperparameters: dict) -> str:
    """``srl-`` + 32 hex: valid as an OpenAI metadata value, a Vertex label value and a Bedrock token."""
    hp = {k: v for k, v in hyperparameters.items() if k != "grader"}
    blob = json.dumps([model_type, provider, base_model, method, hashlib.sha256(dataset).hexdigest(), hp],
                      sort_keys=True, default=str)
    return "srl-" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def candidate_name(provider: str, model_id: str) -> str:
    """``paid:<provider>:<short id>``: short, stable, and unique per tuned model."""
    return f"paid:{provider}:{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


class JobStore:
    """Rows of ``paid_finetune_jobs`` / ``paid_candidates`` in the platform's DuckDB file."""

    def __init__(self, duckdb_store: Any):
        self.db = duckdb_store

    def _ensure(self, conn) -> None:
        for table, cols in ((JOBS_TABLE, _JOB_COLUMNS), (CANDIDATES_TABLE, _CANDIDATE_COLUMNS)):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{k} {v}' for k, v in cols.items())})")

    def upsert(self, row: dict) -> None:
        row = {**row, "updated_at": _now()}
        unknown = set(row) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"{JOBS_TABLE}: unknown columns {sorted(unknown)}")
        with self.db.connect() as conn:
            self._ensure(conn)
            cols = list(row)
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "idempotency_key")
            conn.execute(f"INSERT INTO {JOBS_TABLE} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                         f"ON CONFLICT (idempotency_key) DO UPDATE SET {updates}", [row[c] for c in cols])

    def jobs(self, where: str = "", params: list | None = None) -> pd.DataFrame:
        with self.db.connect() as conn:
            self._ensure(conn)
            return conn.execute(f"SELECT * FROM {JOBS_TABLE}" + (f" WHERE {where}" if where else "")
                                + " ORDER BY created_at", params or []).df()

    def get(self, key: str) -> dict | None:
        df = self.jobs("idempotency_key = ?", [key])
        return None if df.empty else df.iloc[0].to_dict()

    def committed_spend(self, exclude_key: str = "") -> float:
        """Measured cost where known, else the estimate, of every job that reached (or may have reached) a provider."""
        df = self.jobs(f"status IN ({', '.join('?' * len(SPENDING))}) AND idempotency_key <> ?", [*SPENDING, exclude_key])
        if df.empty:
            return 0.0
        return float(df.measured_usd.fillna(df.estimate_usd).fillna(0.0).sum())

    def pending(self, model_type: str | None = None) -> pd.DataFrame:
        where = f"status IN ({', '.join('?' * len(PENDING))}) AND job_id IS NOT NULL"
        params: list = list(PENDING)
        if model_type:
            where += " AND model_type = ?"
            params.append(model_type)
        return self.jobs(where, params)

    def add_candidate(self, model_type: str, tuned: TunedModel, method: str) -> str:
        name = candidate_name(tuned.provider, tuned.model_id)
        row = {"model_type": model_type, "candidate": name, "provider": tuned.provider, "model_id": tuned.model_id,
               "base_model": tuned.base_model, "method": method, "job_id": tuned.job_id,
               "input_per_1k_usd": tuned.input_per_1k_usd, "output_per_1k_usd": tuned.output_per_1k_usd,
               "hosting_per_hour_usd": tuned.hosting_per_hour_usd, "registered_at": _now()}
        with self.db.connect() as conn:
            self._ensure(conn)
            conn.execute(f"DELETE FROM {CANDIDATES_TABLE} WHERE candidate = ? AND model_type = ?", [name, model_type])
            conn.execute(f"INSERT INTO {CANDIDATES_TABLE} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         list(row.values()))
        return name

    def candidates(self, model_type: str) -> pd.DataFrame:
        with self.db.connect() as conn:
            self._ensure(conn)
            return conn.execute(f"SELECT * FROM {CANDIDATES_TABLE} WHERE model_type = ? ORDER BY registered_at",
                                [model_type]).df()


# -------------------------------------------------------------------------------------- submit
@dataclass(frozen=True)
class SubmitRequest:
    model_type: str
    provider: str
    base_model: str
    method: str
    hyperparameters: dict
    max_spend_usd: float
    cumulative_cap_usd: float
    submit: bool          # False = dry run (also when the model type has not opted in)
    suffix: str = ""


@dataclass(frozen=True)
class SubmitResult:
    key: str
    status: str           # "dry_run" | "submitted" | "already_submitted"
    dataset_path: str
    n_examples: int
    estimate: CostEstimate
    job_id: str | None


def submit(tuner: PaidFineTuner, store: JobStore, source: DatasetSource, req: SubmitRequest,
           out_dir: Path, log: Callable[[str], None] = lambda _: None) -> SubmitResult:
    """Check → prepare → validate → write → estimate → (caps → intent → find or upload+create → record).

    Raises ProviderRefused, DatasetFormatError or SpendCapExceeded; on those nothing is submitted.
    """
    tuner.check_available(req.base_model, req.method)
    records = tuner.prepare_dataset(req.method, source, base_model=req.base_model)
    tuner.validate_dataset(req.method, records, base_model=req.base_model)
    data = to_jsonl(records)
    key = idempotency_key(req.model_type, req.provider, req.base_model, req.method, data, req.hyperparameters)
    path = write_jsonl(records, out_dir / f"{req.provider}-{req.method}-{key}.jsonl")
    estimate = tuner.estimate_cost(req.base_model, req.method, records, req.hyperparameters)
    existing = store.get(key)
    base_row = {"idempotency_key": key, "model_type": req.model_type, "provider": req.provider,
                "base_model": req.base_model, "method": req.method, "dataset_path": str(path),
                "dataset_sha256": hashlib.sha256(data).hexdigest(), "n_examples": len(records),
                "estimate_usd": estimate.usd, "price_version": estimate.price_version,
                "hyperparameters": json.dumps({k: v for k, v in req.hyperparameters.items() if k != "grader"},
                                              sort_keys=True, default=str),
                "created_at": existing["created_at"] if existing else _now()}
    if existing is not None and isinstance(existing.get("job_id"), str) and existing["job_id"]:
        log(f"{req.provider}: job {existing['job_id']} already recorded for key {key}; not submitting again")
        return SubmitResult(key, "already_submitted", str(path), len(records), estimate, existing["job_id"])
    if not req.submit:
        if existing is None or existing["status"] == "dry_run":
            store.upsert({**base_row, "status": "dry_run"})
        return SubmitResult(key, "dry_run", str(path), len(records), estimate, None)
    if estimate.usd > req.max_spend_usd:
        raise SpendCapExceeded(req.provider, req.base_model, estimate.usd, req.max_spend_usd, "per-job max_spend_usd")
    spent = store.committed_spend(exclude_key=key)
    if spent + estimate.usd > req.cumulative_cap_usd:
        raise SpendCapExceeded(req.provider, req.base_model, spent + estimate.usd, req.cumulative_cap_usd,
                               f"cumulative (already committed ${spent:.2f})")
    store.upsert({**base_row, "status": "intent"})           # before create: see the module docstring
    handle = tuner.find_job(key)
    if handle is None:
        uri = tuner.upload(records, path.name)
        store.upsert({"idempotency_key": key, "training_uri": uri})
        handle = tuner.create_job(base_model=req.base_model, method=req.method, training_uri=uri,
                                  hyperparameters=req.hyperparameters, idempotency_key=key,
                                  suffix=req.suffix or req.model_type)
    else:
        log(f"{req.provider}: found job {handle.job_id} carrying key {key} (a previous attempt created it)")
    store.upsert({"idempotency_key": key, "status": "submitted", "job_id": handle.job_id})
    return SubmitResult(key, "already_submitted" if handle.found_existing else "submitted", str(path),
                        len(records), estimate, handle.job_id)


# ----------------------------------------------------------------------------------- refresh
def refresh(tuner: PaidFineTuner, store: JobStore, row: dict, log: Callable[[str], None] = lambda _: None) -> JobStatus:
    """Poll one recorded job and store its state; unknown states are logged and stay pending."""
    status = tuner.poll(row["job_id"])
    update: dict[str, Any] = {"idempotency_key": row["idempotency_key"], "provider_state": status.provider_state,
                              "status": status.state}
    if status.state == "unknown":
        log(f"{tuner.name} job {row['job_id']}: unknown state {status.provider_state!r}; will poll again")
    if status.state == "failed":
        update["error"] = status.error or "failed without an error message"
        log(f"{tuner.name} job {row['job_id']} failed: {update['error']}")
    if status.trained_tokens is not None:
        update["trained_tokens"] = int(status.trained_tokens)
        with_price = _maybe_prices(tuner, row["base_model"])
        measured = training_cost(with_price, status.trained_tokens) if with_price else None
        if measured is not None:
            update["measured_usd"] = measured
    if status.tuned_model:
        update["tuned_model"] = status.tuned_model
    store.upsert(update)
    return status


def _maybe_prices(tuner: PaidFineTuner, base_model: str):
    try:
        return tuner.prices(base_model)
    except (LookupError, ProviderRefused):
        return None
