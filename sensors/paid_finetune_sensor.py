"""paid_finetune_sensor: polls the recorded hosted fine-tuning jobs and acts on what they became.

* Every pending job (submitted / queued / running / unknown) is polled once per tick and its state
  stored; an unknown provider state is logged and stays pending, so it is polled again.
* A failed or cancelled job records the provider's error in ``paid_finetune_jobs`` (and the log).
* A succeeded job requests, for its partition, a ``paid_finetune`` run of ``paid_candidates``
  (register + evaluate), then an ``srl_pipeline`` run of ``model_selection`` so the selection
  weighs the new candidate. Two runs, not one, because each asset belongs to its own job and
  ``paid_finetune`` must not hold ``model_selection`` (which fails before the first performance
  report). They run in the order requested: dagster.yaml allows one run per partition at a time
  and the queue dequeues in submission order. ``model_selection`` declares ``paid_candidates`` as a
  dep, so a selection made before a newer ``paid_candidates`` version shows stale in the UI.
* Run keys name the job, so a tick that repeats (the daemon restarted after polling) requests nothing twice.
* A provider error while polling one job (an outage, a missing credential) is logged and the other
  jobs are still polled: one provider's outage must not stall another's jobs.
"""

from __future__ import annotations

import dagster as dg

from resources.duckdb_store import DuckDBStore
from resources.paid import PaidFineTuningResource
from srl_assets.paid.job_store import JobStore, refresh

PAID_JOB, SELECTION_JOB = "paid_finetune", "srl_pipeline"


def poll_jobs(store: JobStore, paid: PaidFineTuningResource, log) -> tuple[list[dg.RunRequest], list[str]]:
    requests, notes = [], []
    pending = store.pending().to_dict("records")
    succeeded = store.jobs("status = 'succeeded'").to_dict("records")  # polled earlier, run not yet made
    for row in pending:
        try:
            status = refresh(paid.provider(row["provider"]), store, row, log.info)
        except Exception as exc:  # noqa: BLE001 — logged, the job stays pending and is polled next tick
            log.warning(f"{row['provider']} job {row['job_id']}: poll failed ({type(exc).__name__}: {exc}); "
                        "will poll again")
            continue
        notes.append(f"{row['provider']} {row['job_id']}: {status.state} ({status.provider_state})")
        if status.state == "failed":
            log.error(f"{row['provider']} job {row['job_id']} failed: {status.error}")
        if status.state == "succeeded":
            succeeded.append(row)
    for row in succeeded:
        requests.append(dg.RunRequest(run_key=f"paid_candidates:{row['job_id']}", job_name=PAID_JOB,
                                      partition_key=row["model_type"], asset_selection=[dg.AssetKey("paid_candidates")],
                                      tags={"srl/trigger": "paid_finetune", "srl/paid_job": row["job_id"]}))
        requests.append(dg.RunRequest(run_key=f"model_selection:{row['job_id']}", job_name=SELECTION_JOB,
                                      partition_key=row["model_type"], asset_selection=[dg.AssetKey("model_selection")],
                                      tags={"srl/trigger": "paid_finetune", "srl/paid_job": row["job_id"]}))
    return requests, notes


def build_paid_finetune_sensor(paid_job, selection_job, minimum_interval_seconds: int = 300) -> dg.SensorDefinition:
    @dg.sensor(name="paid_finetune_sensor", jobs=[paid_job, selection_job],
               minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.STOPPED,
               description="Polls hosted fine-tuning jobs; a succeeded job is registered and evaluated as a candidate.")
    def paid_finetune_sensor(context: dg.SensorEvaluationContext, duckdb_store: DuckDBStore,
                             paid: PaidFineTuningResource):
        store = JobStore(duckdb_store)
        requests, notes = poll_jobs(store, paid, context.log)
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(notes) or "no pending paid fine-tuning job"))
        return dg.SensorResult(run_requests=requests)

    return paid_finetune_sensor
