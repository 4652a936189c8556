"""End to end without a GPU: a checkpoint whose outputs fail a skill leads to a weakness, to a
per-skill model selection that names the better candidate, and to a retraining run request for
its partition. Evaluation records are built from the expert planner's specs (``mutate``-d for the
failing skill) checked by the real Verifier, then stored as ``performance_report`` stores them."""

import random
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from sensors.weakness_sensor import WEAK_SKILL_WEIGHT, build_weakness_sensor
from srl_assets.assets.performance import HISTORY, SKILLS, WEAKNESSES, model_selection, skill_stats, weaknesses
from srl_assets.collaboration.verifier import Verifier
from srl_assets.definitions import srl_pipeline_job
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.performance.performance_tracker import EvalRecord, PerformanceTracker, per_skill_rows, report_rows

MODEL_TYPE = "plant"
WEAK = "soil_ph"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)

DOMAIN, RULES = RulesResource().load(MODEL_TYPE)


def _tasks(seed: int, n: int = 40):
    tasks = DynamicExampleGenerator(DOMAIN, RULES).generate(n, "eval", seed)
    assert sum(WEAK in t.skills for t in tasks) >= 10, "too few soil_ph tasks to judge the skill"
    return tasks


def _records(candidate: str, tasks, break_every: int = 0, latency_s: float = 0.2) -> list[EvalRecord]:
    """The planner's spec for each task; with ``break_every`` = k > 0, every k-th task that
    exercises soil_ph gets a spec mutated to fail soil_ph (k = 1: all of them)."""
    verifier, rng = Verifier(DOMAIN, RULES), random.Random(0)
    records, soil_seen = [], 0
    for task in tasks:
        spec = DOMAIN.plan(task.params, RULES).spec
        if WEAK in task.skills:
            if break_every and soil_seen % break_every == 0:
                spec = DOMAIN.mutate(WEAK, task.params, spec, RULES, rng)
            soil_seen += 1
        verdict = verifier.verify_spec(task, spec)
        records.append(EvalRecord(
            candidate=candidate, task_id=task.task_id, skills=task.skills, passed=verdict.passed,
            score=verdict.score, failed_skills=tuple(s for s in verdict.failed_skills if s in task.skills),
            format_ok=verdict.format_ok, output_tokens=120, latency_s=latency_s))
    return records


def _write_report(store: DuckDBStore, instance, records: list[EvalRecord], report_id: str, created_at: datetime):
    """Store a report as ``performance_report`` does, and record its materialization (what
    ``weaknesses`` and ``model_selection`` consume: the report its lineage names)."""
    reports = PerformanceTracker().summarize(records, MODEL_TYPE, list(DOMAIN.skills))
    created = created_at.isoformat()
    store.append(HISTORY, pd.DataFrame(report_rows(reports, report_id=report_id, model_type=MODEL_TYPE,
                                                   created_at=created)))
    store.append(SKILLS, pd.DataFrame(per_skill_rows(reports, report_id=report_id, model_type=MODEL_TYPE,
                                                     created_at=created)))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "performance_report", partition=MODEL_TYPE, metadata={"report_id": report_id}))
    return {r.candidate: r for r in reports}


def _materialize(store, instance, assets=(weaknesses,)):
    result = dg.materialize(list(assets), partition_key=MODEL_TYPE, resources={"duckdb_store": store},
                            instance=instance)
    assert result.success
    return result



def test_failing_skill_leads_to_weakness_selection_and_retraining_request(store, instance):
    tasks = _tasks(seed=101)
    reports = _write_report(store, instance, _records("srl", tasks) + _records("rlvr", tasks, break_every=1),
                            "rep-1", T0)
    # The verifier really rejects the mutated specs, and only for soil_ph.
    assert reports["rlvr"].per_skill[WEAK].pass_rate == 0.0
    assert reports["srl"].per_skill[WEAK].pass_rate == 1.0
    assert all(st.pass_rate == 1.0 for s, st in reports["rlvr"].per_skill.items() if s != WEAK and st.n)
    assert skill_stats(store, MODEL_TYPE, "rep-1", "rlvr")[WEAK].passed == 0

    result = _materialize(store, instance, (weaknesses, model_selection))
    meta = {m.asset_key.path[-1]: m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert meta["weaknesses"]["weak_skills"].value == 1
    assert meta["weaknesses"]["report_id"].value == "rep-1"

    found = store.read(WEAKNESSES, MODEL_TYPE)
    assert list(found.skill) == [WEAK]
    row = found.iloc[0]
    assert row.reason == "below_threshold" and row.severity == "high"
    assert row.pass_rate == 0.0 and row.report_id == "rep-1" and row.candidate == "rlvr"

    selection = store.read("model_selection", MODEL_TYPE).set_index("skill")
    assert set(selection.index) == {s for s, st in reports["rlvr"].per_skill.items() if st.n}
    soil = selection.loc[WEAK]
    assert soil.chosen == "srl" and soil.runner_up == "rlvr" and soil.margin > 0
    assert "'srl'" in soil.explanation and "beats 'rlvr'" in soil.explanation
    assert (selection.report_id == "rep-1").all()

    sensor = build_weakness_sensor(srl_pipeline_job)
    ctx = dg.build_sensor_context(instance=instance, resources={"duckdb_store": store})
    tick = sensor(ctx)
    assert tick.skip_reason is None and len(tick.run_requests) == 1
    request = tick.run_requests[0]
    assert request.partition_key == MODEL_TYPE
    assert request.run_key == f"weakness-{MODEL_TYPE}-rep-1"
    assert request.tags["srl/weak_skills"] == WEAK
    assert request.run_config["ops"]["task_examples"]["config"]["skill_weights"] == {WEAK: WEAK_SKILL_WEIGHT}

    # The skill recovers in the next report: no new soil_ph weakness, and nothing new to request.
    tasks2 = _tasks(seed=202)
    _write_report(store, instance, _records("srl", tasks2) + _records("rlvr", tasks2), "rep-2", T0 + timedelta(days=1))
    result = _materialize(store, instance)
    assert result.get_asset_materialization_events()[0].materialization.metadata["weak_skills"].value == 0
    found = store.read(WEAKNESSES, MODEL_TYPE)
    assert found[found.report_id == "rep-2"].empty and len(found) == 1
    again = sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources={"duckdb_store": store}))
    assert not again.run_requests and "no weakness detected" in again.skip_reason.skip_message


@pytest.mark.parametrize("break_every", [1, 3], ids=["drop_to_zero", "drop_above_threshold"])
def test_significant_drop_is_flagged_regressed(store, instance, break_every):
    tasks1, tasks2 = _tasks(seed=303), _tasks(seed=404)
    _write_report(store, instance, _records("rlvr", tasks1), "rep-1", T0)
    _materialize(store, instance)
    assert not store.table_exists(WEAKNESSES)  # a healthy first report: nothing weak

    current = _write_report(store, instance, _records("rlvr", tasks2, break_every=break_every), "rep-2",
                            T0 + timedelta(days=1))["rlvr"].per_skill[WEAK]
    _materialize(store, instance)
    found = store.read(WEAKNESSES, MODEL_TYPE)
    assert list(found.skill) == [WEAK]
    row = found.iloc[0]
    assert row.reason == "regressed" and row.report_id == "rep-2"
    assert row.previous_pass_rate == 1.0 and row.pass_rate == pytest.approx(current.pass_rate)
    assert row.p_value < 0.05
    if break_every == 3:  # still above the bar, flagged only because it dropped beyond noise
        assert row.pass_rate >= row.threshold


def test_noise_level_drop_is_not_a_weakness(store, instance):
    """One failure more among the soil_ph tasks, above the threshold, is not significant."""
    tasks = _tasks(seed=505)
    _write_report(store, instance, _records("rlvr", tasks), "rep-1", T0)
    n_soil = sum(WEAK in t.skills for t in tasks)
    _write_report(store, instance, _records("rlvr", tasks, break_every=n_soil), "rep-2", T0 + timedelta(days=1))
    result = _materialize(store, instance)
    assert result.get_asset_materialization_events()[0].materialization.metadata["weak_skills"].value == 0
    assert not store.table_exists(WEAKNESSES)


def test_regression_after_a_first_report_weakness(store, instance):
    tasks = [_tasks(seed=s) for s in (606, 707, 808)]
    _write_report(store, instance, _records("rlvr", tasks[0], break_every=1), "rep-1", T0)
    _materialize(store, instance)  # below_threshold, no previous report: p_value/previous all None
    _write_report(store, instance, _records("rlvr", tasks[1]), "rep-2", T0 + timedelta(days=1))
    _materialize(store, instance)  # recovered
    _write_report(store, instance, _records("rlvr", tasks[2], break_every=1), "rep-3", T0 + timedelta(days=2))
    _materialize(store, instance)  # regressed: p_value and previous_pass_rate are floats
    found = store.read(WEAKNESSES, MODEL_TYPE)
    assert found[found.report_id == "rep-3"].reason.tolist() == ["regressed"]


def test_weaknesses_without_a_report_fails_clearly(store, instance):
    _write_report(store, instance, _records("srl", _tasks(seed=909)), "rep-1", T0)  # no rlvr candidate
    result = dg.materialize([weaknesses], partition_key=MODEL_TYPE, resources={"duckdb_store": store},
                            instance=instance, raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any("no performance report for candidate 'rlvr'" in m for m in messages)
