"""weakness_sensor: a weakness starts one retraining run for its model type's partition, aimed at it.

* What the run is: the run config of the partition's last successful ``srl_pipeline`` run (so a
  partition trained from a real model is retrained as one), with the weak skills' weights merged
  into every stage that draws training tasks (``task_examples``; ``rlvr_checkpoint``'s fresh tasks,
  which RFT's rounds are drawn from), never into the held-out evaluation. It retrains RLVR starting
  from the checkpoint that serves the partition now (the one ``model_selection`` prefers for the
  weak skills; a rules change instead rebuilds everything), then re-evaluates.
* When it triggers: only for a weakness that is new (a skill that was not weak at the partition's
  last retraining) or significantly worse than the pass rate at that retraining (the
  WeaknessDetector's one-sided two-proportion test at ``alpha``). A weakness that stands after its
  retraining triggers nothing more: the loop ends until something new or worse shows up.
* A cooldown per partition stops storms: weaknesses found within ``cooldown_s`` of the last request
  for that partition wait (stay after the cursor) until it ends.
* The cursor holds, per partition, the newest ``detected_at`` handled, when its last run was
  requested, and the weak skills' (passed, n) at that request (the baseline).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from resources.duckdb_store import DuckDBStore
from srl_assets.performance.weakness_detector import two_proportion_p_value

WEAKNESS_TABLE, SKILLS_TABLE, SELECTION_TABLE = "weaknesses", "performance_skills", "model_selection"
JOB_NAME = "srl_pipeline"
COOLDOWN_S = 6 * 3600
WEAK_SKILL_WEIGHT = 4.0
ALPHA = 0.05
# Which asset published each local candidate's checkpoint (its materialization names the key).
CANDIDATE_ASSETS = {"base": "base_model", "srl": "srl_checkpoint", "rlvr": "rlvr_checkpoint"}
DEPLOYED = "rlvr"
# A weakness retraining: fresh (weighted) tasks, RLVR from the serving checkpoint, and a new report.
RETRAIN_ASSETS = ("task_examples", "rlvr_checkpoint", "performance_report", "weaknesses", "model_selection")
# Stages that draw training tasks, and so take the weights.
WEIGHTED_OPS = ("task_examples", "rlvr_checkpoint")


def _parse_cursor(raw: str | None) -> dict:
    state = json.loads(raw) if raw else {}
    state.setdefault("handled_until", {})  # model type -> newest detected_at already handled
    state.setdefault("last_request", {})  # model type -> when its last run was requested
    state.setdefault("baseline", {})  # model type -> {skill: [passed, n]} at its last retraining
    return state


def last_run_config(instance: dg.DagsterInstance | None, model_type: str) -> dict[str, Any]:
    """The run config of the partition's last successful ``srl_pipeline`` run that was not itself a
    weakness retraining (those carry a subset of the ops' config); {} when there is none."""
    if instance is None:
        return {}
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=JOB_NAME, statuses=[dg.DagsterRunStatus.SUCCESS],
                                                   tags={"dagster/partition": model_type}), limit=50)
    for run in runs:  # newest first
        if run.tags.get("srl/trigger") != "weakness":
            config = copy.deepcopy(dict(run.run_config or {}))
            for op in WEIGHTED_OPS:  # a previous retraining's aim is not this one's
                op_config = config.get("ops", {}).get(op, {}).get("config", {})
                op_config.pop("skill_weights", None)
                op_config.pop("start_from", None)
            return config
    return {}


def retraining_run_config(weak_skills: list[str], weight: float = WEAK_SKILL_WEIGHT,
                          base_config: dict[str, Any] | None = None, start_from: str | None = None,
                          ops: tuple[str, ...] | None = None) -> dict:
    """``base_config`` (restricted to ``ops`` when given) with the weak skills' weights merged into
    every stage that draws training tasks, and RLVR's start checkpoint."""
    config = copy.deepcopy(base_config or {})
    all_ops = config.setdefault("ops", {})
    if ops is not None:
        config["ops"] = all_ops = {op: c for op, c in all_ops.items() if op in ops}
    weights = {s: weight for s in sorted(set(weak_skills))}
    for op in WEIGHTED_OPS:
        op_config = all_ops.setdefault(op, {}).setdefault("config", {})
        op_config["skill_weights"] = {**op_config.get("skill_weights", {}), **weights}
    if start_from:
        all_ops["rlvr_checkpoint"]["config"]["start_from"] = start_from
    return config


def serving_checkpoint(instance: dg.DagsterInstance | None, duckdb_store: DuckDBStore, model_type: str,
                       weak_skills: list[str]) -> str | None:
    """The store key of the local checkpoint that serves the weak skills now: ``model_selection``'s
    most chosen candidate among them (RLVR when there is no selection or it chose a paid model),
    as its latest materialization names it."""
    candidate = DEPLOYED
    if duckdb_store.table_exists(SELECTION_TABLE):
        chosen = duckdb_store.read(SELECTION_TABLE, model_type)
        chosen = chosen[chosen.skill.isin(weak_skills) & chosen.chosen.isin(list(CANDIDATE_ASSETS))]
        if not chosen.empty:
            candidate = str(chosen.chosen.value_counts().index[0])
    if instance is None:
        return None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(CANDIDATE_ASSETS[candidate]), asset_partitions=[model_type]),
        limit=1).records
    if not records:
        return None
    key = records[0].asset_materialization.metadata.get("checkpoint_key")
    return str(key.value) if key is not None else None


def _skill_counts(duckdb_store: DuckDBStore, model_type: str, report_id: str, candidate: str,
                  skills: list[str]) -> dict[str, list[int]]:
    """{skill: [passed, n]} of one report's candidate, from the per-skill table the report wrote."""
    if not duckdb_store.table_exists(SKILLS_TABLE):
        return {}
    df = duckdb_store.read(SKILLS_TABLE, model_type, "report_id = ? AND candidate = ?", [report_id, candidate])
    return {r.skill: [int(r.passed), int(r.n)] for r in df.itertuples() if r.skill in skills}


def triggering_skills(weak: list[str], counts: dict[str, list[int]], baseline: dict[str, list[int]] | None,
                      alpha: float = ALPHA) -> dict[str, str]:
    """{skill: why} for the weak skills that call for a retraining: ``new`` (not weak at the last
    retraining, or no retraining yet) or ``worse`` (significantly below the pass rate then).

    >>> triggering_skills(["a", "b", "c"], {"b": [1, 50], "c": [20, 50]}, {"b": [20, 50], "c": [21, 50]})
    {'a': 'new', 'b': 'worse'}
    """
    if baseline is None:
        return {s: "new" for s in weak}
    why = {}
    for skill in weak:
        if skill not in baseline:
            why[skill] = "new"
            continue
        (x1, n1), now = baseline[skill], counts.get(skill)
        if now is not None and n1 > 0 and now[1] > 0 and now[0] / now[1] < x1 / n1 \
                and two_proportion_p_value(x1, n1, now[0], now[1]) < alpha:
            why[skill] = "worse"
    return why


def evaluate_weaknesses(duckdb_store: DuckDBStore, cursor: str | None, now: datetime,
                        cooldown_s: float = COOLDOWN_S, instance: dg.DagsterInstance | None = None,
                        alpha: float = ALPHA) -> tuple[list[dg.RunRequest], str, str | None]:
    """(run requests, new cursor, skip reason). Pure enough to test without a sensor context
    (without an instance: no last run config and no serving checkpoint to look up).

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
    requests, deferred, standing = [], [], []
    for model_type, group in rows.sort_values("detected_at").groupby("model_type"):
        last = state["last_request"].get(model_type)
        if last and (now - datetime.fromisoformat(last)).total_seconds() < cooldown_s:
            deferred.append(model_type)
            continue
        state["handled_until"][model_type] = str(group.detected_at.max())
        latest = group[group.report_id == group.report_id.iloc[-1]]  # the newest report's weaknesses
        report_id, candidate = str(latest.report_id.iloc[-1]), str(latest.candidate.iloc[-1])
        weak = sorted(set(latest.skill))
        counts = _skill_counts(duckdb_store, model_type, report_id, candidate, weak)
        why = triggering_skills(weak, counts, state["baseline"].get(model_type), alpha)
        if not why:
            standing.append(model_type)
            continue
        run_config = retraining_run_config(
            weak, base_config=last_run_config(instance, model_type), ops=RETRAIN_ASSETS,
            start_from=serving_checkpoint(instance, duckdb_store, model_type, weak))
        requests.append(dg.RunRequest(
            run_key=f"weakness-{model_type}-{report_id}", partition_key=model_type, run_config=run_config,
            asset_selection=[dg.AssetKey(a) for a in RETRAIN_ASSETS],
            tags={"srl/trigger": "weakness", "srl/weak_skills": ",".join(weak), "srl/report_id": report_id,
                  "srl/why": ",".join(f"{s}:{w}" for s, w in sorted(why.items()))}))
        state["last_request"][model_type] = now.isoformat()
        state["baseline"][model_type] = {s: counts.get(s, [0, 0]) for s in weak}
    skip = None
    if not requests:
        parts = []
        if standing:
            parts.append("weaknesses unchanged since their retraining (not new, not significantly worse): "
                         + ", ".join(sorted(standing)))
        if deferred:
            parts.append("weak partitions are in their cooldown: " + ", ".join(sorted(deferred)))
        skip = "; ".join(parts)
    return requests, json.dumps(state), skip


def build_weakness_sensor(job: dg.UnresolvedAssetJobDefinition, cooldown_s: float = COOLDOWN_S,
                          minimum_interval_seconds: int = 60, alpha: float = ALPHA) -> dg.SensorDefinition:
    @dg.sensor(name="weakness_sensor", job=job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Requests one retraining run, aimed at the weak skills, for a new or significantly "
                           "worse weakness.")
    def weakness_sensor(context: dg.SensorEvaluationContext, duckdb_store: DuckDBStore):
        requests, cursor, skip = evaluate_weaknesses(duckdb_store, context.cursor, datetime.now(timezone.utc),
                                                     cooldown_s, context.instance, alpha)
        if skip:
            return dg.SensorResult(skip_reason=dg.SkipReason(skip), cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return weakness_sensor
