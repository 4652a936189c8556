"""Every asset check fails when what it guards is wrong, and RLVR's format_violation_rate counts the
Verifier's format and schema failures. The checks are the functions the assets call on their results."""

from __future__ import annotations

import random

import dagster as dg
import pytest

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from srl_assets.assets.performance import CHECK_COVERAGE, CHECK_NO_REGRESSION, report_checks
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import check_reassembly, srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import tasks_from, trajectories, verify_stored
from srl_assets.collaboration.verifier import Verifier
from srl_assets.performance.performance_tracker import PerformanceTracker
from srl_assets.reward_normalizer import make_normalizer
from srl_assets.rlvr.verifier_reward import make_verifier_reward_fn, task_column
from srl_assets.training.grpo_common import NormalizedReward
from srl_assets.trajectory import render_trajectory
from test_performance_assets import DOMAIN, MODEL_TYPE, RULES, _records, _tasks


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One partition's data assets, materialized for real (their checks pass)."""
    db = tmp_path_factory.mktemp("checks") / "srl.duckdb"
    resources = {"duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
                 "teacher": TeacherResource(), "training": TrainingResource(work_root=str(db.parent / "work"))}
    with dg.instance_for_test() as instance:
        result = dg.materialize([rules, task_examples, trajectories, srl_steps], partition_key=MODEL_TYPE,
                                resources=resources, instance=instance,
                                run_config={"ops": {"task_examples": {"config": {"n_train": 4, "n_eval": 1}}}})
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    return resources["duckdb_store"]


def test_trajectory_check_fails_on_a_stored_trajectory_the_verifier_rejects(stored):
    trajs = stored.read("trajectories", MODEL_TYPE)
    tasks = {t.task_id: t for t in tasks_from(stored.read("task_examples", MODEL_TYPE))}
    first = trajs.iloc[0]
    task = tasks[first.task_id]
    broken_skill = task.skills[0]
    plan = DOMAIN.plan(task.params, RULES)
    spec = DOMAIN.mutate(broken_skill, task.params, plan.spec, RULES, random.Random(0))
    trajs.loc[trajs.index[0], "trajectory"] = render_trajectory(plan.steps, spec)
    tampered = DuckDBStore(database=stored.database.replace("srl.duckdb", "tampered.duckdb"))
    tampered.replace_partition("task_examples", MODEL_TYPE, stored.read("task_examples", MODEL_TYPE))
    tampered.replace_partition("trajectories", MODEL_TYPE, trajs)
    assert verify_stored(stored, RulesResource(), MODEL_TYPE).passed
    check = verify_stored(tampered, RulesResource(), MODEL_TYPE)
    assert not check.passed and check.metadata["failed"].value == 1
    assert first.task_id in check.metadata["failed_task_ids"].value


def test_reassembly_check_fails_on_a_step_that_does_not_rebuild_its_trajectory(stored):
    steps = stored.read("srl_steps", MODEL_TYPE)
    steps.loc[steps.index[0], "target"] = steps.iloc[0].target + " (edited)"
    tampered = DuckDBStore(database=stored.database.replace("srl.duckdb", "steps.duckdb"))
    tampered.replace_partition("trajectories", MODEL_TYPE, stored.read("trajectories", MODEL_TYPE))
    tampered.replace_partition("srl_steps", MODEL_TYPE, steps)
    assert check_reassembly(stored, MODEL_TYPE).passed
    check = check_reassembly(tampered, MODEL_TYPE)
    assert not check.passed and check.metadata["mismatched"].value == 1


def _reports(records):
    return PerformanceTracker().summarize(records, MODEL_TYPE, list(DOMAIN.skills))


def test_coverage_check_needs_the_configured_number_of_tasks_per_skill():
    tasks = _tasks(seed=11)
    reports = _reports(_records("srl", tasks) + _records("rlvr", tasks))
    fewest = min(stat.n for r in reports for stat in r.per_skill.values())
    thinnest = sorted({s for r in reports for s, stat in r.per_skill.items() if stat.n == fewest})

    passed = {c.check_name: c for c in report_checks(reports, list(DOMAIN.skills), fewest)}[CHECK_COVERAGE]
    assert passed.passed
    failed = {c.check_name: c for c in report_checks(reports, list(DOMAIN.skills), fewest + 1)}[CHECK_COVERAGE]
    assert not failed.passed and failed.metadata["uncovered_skills"].value == ", ".join(thinnest)
    # A skill that no evaluated task exercised is never covered.
    unknown = {c.check_name: c for c in report_checks(reports, [*DOMAIN.skills, "not_a_skill"], 0)}[CHECK_COVERAGE]
    assert not unknown.passed


def test_no_regression_check_fails_when_rlvr_falls_below_srl_beyond_noise():
    tasks = _tasks(seed=12)
    same = {c.check_name: c for c in report_checks(_reports(_records("srl", tasks) + _records("rlvr", tasks)),
                                                   list(DOMAIN.skills), 0)}[CHECK_NO_REGRESSION]
    assert same.passed
    worse = {c.check_name: c for c in report_checks(
        _reports(_records("srl", tasks) + _records("rlvr", tasks, break_every=1)), list(DOMAIN.skills), 0)}
    check = worse[CHECK_NO_REGRESSION]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rlvr_ci_high"].value < check.metadata["srl_ci_low"].value


def test_rlvr_format_violation_rate_counts_the_verifiers_format_and_schema_failures():
    tasks = _tasks(seed=13, n=40)[:4]
    verifier = Verifier(DOMAIN, RULES)
    plan = DOMAIN.plan(tasks[0].params, RULES)
    wrong_value = DOMAIN.mutate(tasks[0].skills[0], tasks[0].params, plan.spec, RULES, random.Random(0))
    completions = [
        render_trajectory(plan.steps, plan.spec),           # right: no violation
        render_trajectory(plan.steps, wrong_value),         # a wrong value: a failure, not a format one
        "no numbered steps at all",                         # format
        render_trajectory(plan.steps, {"unexpected": 1}),  # JSON, but not the model type's schema
    ]
    reward = NormalizedReward(make_verifier_reward_fn(verifier), make_normalizer("none"), 4, "verifier_score")
    reward(["p"] * 4, completions, task=[task_column(tasks[0])] * 4)
    assert reward.format_history == [0.5]
