"""weakness_sensor: a new weakness starts a retraining run for its model type's partition.

* Cursor-based: the cursor holds the newest ``detected_at`` already handled, so one weakness
  triggers once; run keys (report id + partition) make a re-evaluated tick request nothing new.
* A cooldown per partition stops storms: weaknesses found within ``cooldown_s`` of the last
  request for that partition are deferred (left after the cursor) until the cooldown ends.
* The run config raises the DynamicExampleGenerator's weights on the weak skills.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg

from resources.duckdb_store import DuckDBStore

WEAKNESS_TABLE = "weaknesses"
COOLDOWN_S = 6 * 3600
WEAK_SKILL_WEIGHT = 4.0


def _parse_cursor(raw: str | None) -> dict:
    state = json.loads(raw) if raw else {}
    state.setdefault("handled_until", {})  # model type -> newest detected_at already requested
    state.setdefault("last_request", {})  # model type -> when its last run was requested
    return state


def retraining_run_config(weak_skills: list[str], weight: float = WEAK_SKILL_WEIGHT) -> dict:
    return {"ops": {"task_examples": {"config": {"skill_weights": {s: weight for s in sorted(set(weak_skills))}}}}}


def evaluate_weaknesses(duckdb_store: DuckDBStore, cursor: str | None, now: datetime,
                        cooldown_s: float = COOLDOWN_S) -> tuple[list[dg.RunRequest], str, str | None]:
    """(run requests, new cursor, skip reason). Pure enough to test without a sensor context.

    The cursor keeps a high-water mark per partition, so a weakness deferred by one partition's
    cooldown never makes another partition's weakness trigger twice.
    """
    state = _parse_cursor(cursor)
    if not duckdb_store.table_exists(WEAKNESS_TABLE):
        return [], json.dumps(state), "no weaknesses table yet: materialize `weaknesses` first"
    low = min(state["handled_until"].values(), default="")
    rows = duckdb_store.read(WEAKNESS_TABLE, where="detected_at > ?", params=[low])
    rows = rows[rows.detected_at > rows.model_type.map(lambda m: state["handled_until"].get(m, ""))]
    if rows.empty:
        return [], json.dumps(state), "no weakness detected since the last request of each partition"
    requests, deferred = [], []
    for model_type, group in rows.sort_values("detected_at").groupby("model_type"):
        last = state["last_request"].get(model_type)
        if last and (now - datetime.fromisoformat(last)).total_seconds() < cooldown_s:
            deferred.append(model_type)
            continue
        report_id = str(group.report_id.iloc[-1])
        skills = sorted(set(group.skill))
        requests.append(dg.RunRequest(
            run_key=f"weakness-{model_type}-{report_id}", partition_key=model_type,
            run_config=retraining_run_config(skills),
            tags={"srl/trigger": "weakness", "srl/weak_skills": ",".join(skills), "srl/report_id": report_id}))
        state["handled_until"][model_type] = str(group.detected_at.max())
        state["last_request"][model_type] = now.isoformat()
    skip = None if requests else "weak partitions are in their cooldown: " + ", ".join(sorted(deferred))
    return requests, json.dumps(state), skip


def build_weakness_sensor(job: dg.UnresolvedAssetJobDefinition, cooldown_s: float = COOLDOWN_S,
                          minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(name="weakness_sensor", job=job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Requests a retraining run, aimed at the weak skills, when a new weakness appears.")
    def weakness_sensor(context: dg.SensorEvaluationContext, duckdb_store: DuckDBStore):
        requests, cursor, skip = evaluate_weaknesses(duckdb_store, context.cursor, datetime.now(timezone.utc), cooldown_s)
        if skip:
            return dg.SensorResult(skip_reason=dg.SkipReason(skip), cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return weakness_sensor
