"""The two sensors: a new weakness requests one retraining run for its partition (once, with a
cooldown), and a rules edit requests one pipeline run for its partition (an invalid edit none)."""

import json
import uuid
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from sensors.rules_sensor import build_rules_change_sensor, changed_partitions
from sensors.weakness_sensor import (WEAK_SKILL_WEIGHT, build_weakness_sensor, evaluate_weaknesses,
                                     retraining_run_config)
from srl_assets.assets.rules_asset import rules
from srl_assets.definitions import defs, srl_pipeline_job
from srl_assets.domains import MODEL_TYPES
from srl_assets.rules_integration import RULES_DIR, RulesIntegration

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
COOLDOWN_S = 6 * 3600



def _add_weaknesses(store: DuckDBStore, model_type: str, report_id: str, skills: list[str],
                    detected_at: datetime) -> None:
    """Rows shaped like the ``weaknesses`` asset writes them (detected_at an ISO string)."""
    store.append("weaknesses", pd.DataFrame([{
        "model_type": model_type, "skill": s, "pass_rate": 0.2, "threshold": 0.6,
        "previous_pass_rate": 0.9, "reason": "below_threshold", "severity": "high", "p_value": 0.01,
        "report_id": report_id, "candidate": "rlvr", "detected_at": detected_at.isoformat(),
        "run_id": f"run-{report_id}"} for s in skills]))


def _tick(sensor: dg.SensorDefinition, instance, store, cursor=None) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"duckdb_store": store})
    result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


# ----------------------------------------------------------------------------------------------
# weakness_sensor


def test_weakness_sensor_definition():
    sensor = build_weakness_sensor(srl_pipeline_job, cooldown_s=60, minimum_interval_seconds=30)
    assert sensor.name == "weakness_sensor"
    assert sensor.job_name == "srl_pipeline"
    assert sensor.minimum_interval_seconds == 30
    assert "duckdb_store" in sensor.required_resource_keys
    assert {s.name for s in defs.sensors} >= {"weakness_sensor", "rules_change_sensor"}


def test_weakness_sensor_skips_when_no_table(instance, store):
    result = _tick(build_weakness_sensor(srl_pipeline_job), instance, store)
    assert not result.run_requests
    assert result.skip_reason is not None
    assert "no weaknesses table yet" in result.skip_reason.skip_message
    # The cursor it returns still lets the first weakness through.
    _add_weaknesses(store, "plant", "rep-1", ["soil_ph"], datetime.now(timezone.utc))
    assert [r.run_key for r in _tick(build_weakness_sensor(srl_pipeline_job), instance, store,
                                     cursor=result.cursor).run_requests] == ["weakness-plant-rep-1"]


def test_one_run_request_per_new_weakness_partition_then_none(instance, store):
    sensor = build_weakness_sensor(srl_pipeline_job)
    now = datetime.now(timezone.utc)
    _add_weaknesses(store, "plant", "rep-plant-1", ["soil_ph", "rarity"], now - 2 * HOUR)
    _add_weaknesses(store, "tree", "rep-tree-1", ["height_growth"], now - HOUR)

    first = _tick(sensor, instance, store)
    assert first.skip_reason is None
    by_partition = {r.partition_key: r for r in first.run_requests}
    assert len(first.run_requests) == 2 and set(by_partition) == {"plant", "tree"}

    plant = by_partition["plant"]
    assert plant.run_key == "weakness-plant-rep-plant-1"
    assert plant.tags["srl/trigger"] == "weakness"
    assert plant.tags["srl/weak_skills"] == "rarity,soil_ph"
    assert plant.tags["srl/report_id"] == "rep-plant-1"
    assert plant.run_config["ops"]["task_examples"]["config"]["skill_weights"] == {
        "rarity": WEAK_SKILL_WEIGHT, "soil_ph": WEAK_SKILL_WEIGHT}
    assert by_partition["tree"].run_config == retraining_run_config(["height_growth"])
    assert by_partition["tree"].run_key == "weakness-tree-rep-tree-1"

    # The cursor remembers what was handled: the next tick requests nothing and says why.
    second = _tick(sensor, instance, store, cursor=first.cursor)
    assert not second.run_requests
    assert "no weakness detected since" in second.skip_reason.skip_message
    assert second.cursor == first.cursor


def test_run_request_resolves_against_the_pipeline_job(instance, store):
    """With the code location's definitions the request resolves to a partitioned run of
    ``srl_pipeline`` whose run config is valid for the job."""
    _add_weaknesses(store, "plant", "rep-1", ["soil_ph"], datetime.now(timezone.utc) - HOUR)
    ctx = dg.build_sensor_context(instance=instance, resources={"duckdb_store": store}, definitions=defs)
    data = build_weakness_sensor(srl_pipeline_job).evaluate_tick(ctx)
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.partition_key == "plant" and request.tags["dagster/partition"] == "plant"
    job = defs.resolve_job_def("srl_pipeline")
    config = dg.validate_run_config(job, request.run_config)
    assert config["ops"]["task_examples"]["config"]["skill_weights"] == {"soil_ph": WEAK_SKILL_WEIGHT}


def test_cooldown_defers_newer_weakness_of_same_partition(store):
    _add_weaknesses(store, "plant", "rep-1", ["soil_ph"], T0 - HOUR)
    requests, cursor, skip = evaluate_weaknesses(store, None, T0, COOLDOWN_S)
    assert [r.run_key for r in requests] == ["weakness-plant-rep-1"] and skip is None

    # A newer weakness of the same partition inside the cooldown: deferred, not dropped.
    _add_weaknesses(store, "plant", "rep-2", ["rarity"], T0 + HOUR)
    requests, cursor2, skip = evaluate_weaknesses(store, cursor, T0 + 2 * HOUR, COOLDOWN_S)
    assert requests == []
    assert "cooldown" in skip and "plant" in skip
    assert json.loads(cursor2)["handled_until"] == json.loads(cursor)["handled_until"]  # not advanced

    # Still inside the cooldown a few hours later.
    requests, cursor3, skip = evaluate_weaknesses(store, cursor2, T0 + 5 * HOUR, COOLDOWN_S)
    assert requests == [] and "cooldown" in skip

    # Once the cooldown has passed, the deferred weakness is requested, exactly once.
    requests, cursor4, skip = evaluate_weaknesses(store, cursor3, T0 + 6 * HOUR + timedelta(seconds=1), COOLDOWN_S)
    assert skip is None and len(requests) == 1
    assert requests[0].run_key == "weakness-plant-rep-2" and requests[0].partition_key == "plant"
    assert requests[0].tags["srl/report_id"] == "rep-2"
    assert "rarity" in requests[0].run_config["ops"]["task_examples"]["config"]["skill_weights"]

    requests, _, skip = evaluate_weaknesses(store, cursor4, T0 + 7 * HOUR, COOLDOWN_S)
    assert requests == [] and "no weakness detected since" in skip


def test_cooldown_is_per_partition(store):
    _add_weaknesses(store, "plant", "rep-p1", ["soil_ph"], T0 - HOUR)
    _, cursor, _ = evaluate_weaknesses(store, None, T0, COOLDOWN_S)
    _add_weaknesses(store, "plant", "rep-p2", ["soil_ph"], T0 + HOUR)
    _add_weaknesses(store, "tree", "rep-t1", ["height_growth"], T0 + HOUR)
    requests, _, skip = evaluate_weaknesses(store, cursor, T0 + 2 * HOUR, COOLDOWN_S)
    assert [(r.partition_key, r.run_key) for r in requests] == [("tree", "weakness-tree-rep-t1")]
    assert skip is None


def test_weakness_requested_during_another_partitions_cooldown_triggers_once(store):
    _add_weaknesses(store, "plant", "rep-p1", ["soil_ph"], T0 - HOUR)
    _, cursor, _ = evaluate_weaknesses(store, None, T0, COOLDOWN_S)
    _add_weaknesses(store, "plant", "rep-p2", ["rarity"], T0 + HOUR)  # new skill, deferred (plant cooldown)
    _add_weaknesses(store, "tree", "rep-t1", ["height_growth"], T0 + 2 * HOUR)  # requested now
    requested = []
    for hours in (3, 7, 10, 14):
        requests, cursor, _ = evaluate_weaknesses(store, cursor, T0 + hours * HOUR, COOLDOWN_S)
        requested += [r.run_key for r in requests]
    assert sorted(requested) == ["weakness-plant-rep-p2", "weakness-tree-rep-t1"]


# ----------------------------------------------------------------------------------------------
# rules_change_sensor


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    root = tmp_path / "rules"
    root.mkdir()
    for model_type in MODEL_TYPES:
        for suffix in (".yaml", ".md"):
            shutil.copy(RULES_DIR / f"{model_type}{suffix}", root / f"{model_type}{suffix}")
    return root


def _rules_tick(instance, resource, definitions=None):
    ctx = dg.build_sensor_context(instance=instance, resources={"rules_resource": resource},
                                  definitions=definitions)
    return build_rules_change_sensor(srl_pipeline_job)(ctx)


def test_rules_change_sensor_requests_one_run_per_edit(instance, rules_dir):
    resource = RulesResource(rules_dir=str(rules_dir))
    sensor = build_rules_change_sensor(srl_pipeline_job)
    assert sensor.name == "rules_change_sensor" and sensor.job_name == "srl_pipeline"
    assert "rules_resource" in sensor.required_resource_keys

    # Never materialized: nothing to compare with, nothing requested.
    result = _rules_tick(instance, resource)
    assert isinstance(result, dg.SkipReason)

    assert dg.materialize([rules], partition_key="plant", instance=instance,
                          resources={"rules_resource": resource}).success
    result = _rules_tick(instance, resource)
    assert isinstance(result, dg.SkipReason)
    assert "unchanged" in result.skip_message

    # Edit a number of plant.yaml: the rules version changes, one run for "plant".
    path = rules_dir / "plant.yaml"
    text = path.read_text()
    assert "loam:  {ph: [6.0, 7.0]}" in text
    path.write_text(text.replace("loam:  {ph: [6.0, 7.0]}", "loam:  {ph: [6.0, 7.2]}"))
    new_version = RulesIntegration(rules_dir).load("plant").version

    result = _rules_tick(instance, resource)
    assert isinstance(result, list) and len(result) == 1
    request = result[0]
    assert request.partition_key == "plant"
    assert request.tags["srl/trigger"] == "rules_change"
    assert request.tags["srl/rules_version"] == new_version
    assert request.run_key == f"rules-plant-{new_version}"
    assert changed_partitions(instance, resource) == ({"plant": new_version}, [])

    # The request resolves against the code location's partitioned job.
    ctx = dg.build_sensor_context(instance=instance, resources={"rules_resource": resource}, definitions=defs)
    data = sensor.evaluate_tick(ctx)
    assert [r.partition_key for r in data.run_requests] == ["plant"]

    # Rematerializing the new version settles it.
    assert dg.materialize([rules], partition_key="plant", instance=instance,
                          resources={"rules_resource": resource}).success
    assert isinstance(_rules_tick(instance, resource), dg.SkipReason)


def test_rules_change_sensor_ignores_invalid_edit(instance, rules_dir):
    resource = RulesResource(rules_dir=str(rules_dir))
    assert dg.materialize([rules], partition_key="plant", instance=instance,
                          resources={"rules_resource": resource}).success
    path = rules_dir / "plant.yaml"
    path.write_text(path.read_text() + "\n  soils: [unclosed\n")

    result = _rules_tick(instance, resource)  # must not raise
    assert isinstance(result, dg.SkipReason)
    assert "1 invalid rules file" in result.skip_message
    changed, errors = changed_partitions(instance, resource)
    assert changed == {}
    assert len(errors) == 1 and str(path) in errors[0] and "invalid YAML" in errors[0]


# ----------------------------------------------------------------------------------------------
# retraining that targets the weakness and stops

from dagster._core.storage.dagster_run import DagsterRun  # noqa: E402

from sensors.weakness_sensor import RETRAIN_ASSETS, triggering_skills  # noqa: E402
from srl_assets.dynamic_example_generator import DynamicExampleGenerator  # noqa: E402
from srl_assets.rlvr.rlvr_tasks import rlvr_tasks  # noqa: E402

LAST_CONFIG = {"ops": {
    "task_examples": {"config": {"n_train": 40, "n_eval": 10}},
    "base_model": {"config": {"model_name_or_path": "/models/real-base", "sft_steps": 0}},
    "rlvr_checkpoint": {"config": {"n_tasks": 200, "algorithm": "rft"}},
    "performance_report": {"config": {"n_eval_tasks": 50}},
}}


def _add_run(instance, model_type: str, run_config: dict, status=dg.DagsterRunStatus.SUCCESS, tags=None):
    instance.add_run(DagsterRun(job_name="srl_pipeline", run_id=str(uuid.uuid4()), run_config=run_config,
                                status=status, tags={"dagster/partition": model_type, **(tags or {})}))


def _add_report(store: DuckDBStore, model_type: str, report_id: str, skill: str, passed: int, n: int) -> None:
    """A report's weak skill as the two tables hold it: the weakness row and the per-skill counts."""
    detected = datetime.now(timezone.utc)
    _add_weaknesses(store, model_type, report_id, [skill], detected)
    store.append("performance_skills", pd.DataFrame([{
        "report_id": report_id, "model_type": model_type, "created_at": detected.isoformat(), "candidate": "rlvr",
        "skill": skill, "n": n, "passed": passed, "pass_rate": passed / n, "ci_low": 0.0, "ci_high": 1.0}]))


def test_weakness_retrains_from_the_serving_checkpoint_with_the_last_config_once_then_again_when_worse(
        instance, store):
    sensor = build_weakness_sensor(srl_pipeline_job, cooldown_s=0)  # every later tick is past the cooldown
    _add_run(instance, "plant", {"ops": {"task_examples": {"config": {"n_train": 1}}}})  # older
    _add_run(instance, "plant", LAST_CONFIG)  # the last successful run of the partition
    _add_run(instance, "plant", {"ops": {}}, status=dg.DagsterRunStatus.FAILURE)  # not successful: ignored
    _add_run(instance, "tree", {"ops": {"task_examples": {"config": {"n_train": 3}}}})  # another partition
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "rlvr_checkpoint", partition="plant", metadata={"checkpoint_key": "rlvr/plant/serving-run"}))

    _add_report(store, "plant", "rep-1", "soil_ph", passed=8, n=20)
    first = _tick(sensor, instance, store)
    (request,) = first.run_requests
    ops = request.run_config["ops"]
    # The last run's config for the ops this run executes, plus the weights where tasks are drawn.
    assert set(ops) == {"task_examples", "rlvr_checkpoint", "performance_report"}
    assert ops["task_examples"]["config"] == {"n_train": 40, "n_eval": 10, "skill_weights": {"soil_ph": WEAK_SKILL_WEIGHT}}
    assert ops["rlvr_checkpoint"]["config"] == {"n_tasks": 200, "algorithm": "rft", "start_from": "rlvr/plant/serving-run",
                                                "skill_weights": {"soil_ph": WEAK_SKILL_WEIGHT}}
    assert ops["performance_report"] == LAST_CONFIG["ops"]["performance_report"]  # held-out eval: no weights
    assert request.asset_selection == [dg.AssetKey(a) for a in RETRAIN_ASSETS]
    assert request.tags["srl/why"] == "soil_ph:new"
    dg.validate_run_config(defs.resolve_job_def("srl_pipeline"), request.run_config)

    # The retraining ran and the weakness stands at about the same rate: nothing is requested.
    _add_run(instance, "plant", request.run_config, tags={"srl/trigger": "weakness"})
    _add_report(store, "plant", "rep-2", "soil_ph", passed=7, n=20)
    second = _tick(sensor, instance, store, cursor=first.cursor)
    assert not second.run_requests
    assert "unchanged since their retraining" in second.skip_reason.skip_message

    # Significantly worse than at the last retraining (8/20 -> 1/20, p < 0.05): requested again,
    # still from the last full run's config (not the retraining's subset).
    _add_report(store, "plant", "rep-3", "soil_ph", passed=1, n=20)
    third = _tick(sensor, instance, store, cursor=second.cursor)
    (again,) = third.run_requests
    assert again.run_key == "weakness-plant-rep-3" and again.tags["srl/why"] == "soil_ph:worse"
    assert again.run_config == request.run_config

    # A new weak skill next to the standing one triggers too.
    _add_report(store, "plant", "rep-4", "rarity", passed=2, n=20)
    fourth = _tick(sensor, instance, store, cursor=third.cursor)
    assert [r.tags["srl/why"] for r in fourth.run_requests] == ["rarity:new"]


def test_triggering_skills_table():
    base = {"a": [10, 20]}
    cases = [
        (["a"], {"a": [10, 20]}, None, {"a": "new"}),  # no retraining yet
        (["a"], {"a": [9, 20]}, base, {}),  # standing, within noise
        (["a"], {"a": [2, 20]}, base, {"a": "worse"}),  # 0.5 -> 0.1: p ~ 0.003
        (["a"], {}, base, {}),  # no counts: cannot be shown worse
        (["a", "b"], {"a": [10, 20]}, base, {"b": "new"}),  # a new weak skill
    ]
    for weak, counts, baseline, expected in cases:
        assert triggering_skills(weak, counts, baseline) == expected, (weak, counts, baseline)


def test_weights_reach_rlvr_tasks_but_not_the_held_out_split():
    from srl_assets.domains import get_domain

    domain, rules_ = get_domain("plant"), RulesIntegration().load("plant")
    def draw(generator):
        train, validation = rlvr_tasks([], generator, 120, 20, seed=1)
        assert all(t.split == "train" for t in train + validation)
        return train + validation

    plain_tasks = draw(DynamicExampleGenerator(domain, rules_))
    # the skill the plain draw exercises least (a weak skill is one the policy sees too little)
    skill = min(sorted(domain.skills), key=lambda s: sum(s in t.skills for t in plain_tasks))

    def share(generator):
        tasks = draw(generator)
        return sum(skill in t.skills for t in tasks) / len(tasks)

    plain = share(DynamicExampleGenerator(domain, rules_))
    weighted = share(DynamicExampleGenerator(domain, rules_, skill_weights={skill: WEAK_SKILL_WEIGHT}))
    assert weighted > plain + 0.1, (plain, weighted)


def test_rules_change_request_carries_the_last_run_config(instance, rules_dir):
    resource = RulesResource(rules_dir=str(rules_dir))
    assert dg.materialize([rules], partition_key="plant", instance=instance,
                          resources={"rules_resource": resource}).success
    _add_run(instance, "plant", LAST_CONFIG)
    _add_run(instance, "plant", {"ops": {"rlvr_checkpoint": {"config": {"skill_weights": {"x": 2.0}}}}},
             tags={"srl/trigger": "weakness"})  # a retraining's subset config is not the partition's
    path = rules_dir / "plant.yaml"
    path.write_text(path.read_text().replace("loam:  {ph: [6.0, 7.0]}", "loam:  {ph: [6.0, 7.2]}"))
    (request,) = _rules_tick(instance, resource)
    assert request.run_config == LAST_CONFIG


def test_the_retraining_report_shows_the_weak_skills_before_and_after(store):
    from types import SimpleNamespace

    from srl_assets.assets.performance import weak_skills_table
    from srl_assets.performance.performance_tracker import SkillStat

    _add_report(store, "plant", "rep-1", "soil_ph", passed=8, n=20)
    after = SimpleNamespace(per_skill={"soil_ph": SkillStat(20, 15, 0.75, 0.5, 0.9)})
    table = weak_skills_table(store, "plant", "rep-1", ["soil_ph", "rarity"], after).value
    assert "| `soil_ph` | 0.40 (8/20) | 0.75 (15/20) |" in table
    assert "| `rarity` | n/a | n/a |" in table
