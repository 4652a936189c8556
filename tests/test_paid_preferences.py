"""Preference pairs for hosted fine-tuning from the partition's local policy, ranked by the Verifier:
the pair rules on scripted samples, then ``paid_finetune_jobs`` sampling a tiny checkpoint that an
``rlvr_checkpoint`` materialization names."""

import json
import shutil

import dagster as dg
import pytest

from helpers.paid_data import MODEL_TYPE, expert, tiny_checkpoint, trajectory_rows
from resources.checkpoint_store import LocalCheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.paid import PaidFineTuningResource
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from srl_assets.assets.paid import paid_finetune_jobs
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import load_tasks, trajectories
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.collaboration.verifier import Verifier
from srl_assets.paid import get_provider
from srl_assets.paid.base import DatasetSource
from srl_assets.paid.datasets import mutated_samples, pairs_from_policy, policy_preference_pairs, sample_policy
from srl_assets.paid.job_store import JobStore
from srl_assets.prompts import strip_think

MT = MODEL_TYPE
PREF = {"method": "preference", "preference_samples_per_task": 2, "preference_max_new_tokens": 24}


# ----------------------------------------------------------------------- the pair rules, scripted
def _scripted(n=14):
    """Tasks, prompts, k=4 scripted samples per task and the expert trajectories; tasks 1-4 are the
    special cases, the rest a mix of passing and failing samples."""
    rows, tasks, domain, rules_ = trajectory_rows(n)
    verifier = Verifier(domain, rules_)
    right = {t.task_id: expert(domain, rules_, t) for t in tasks}
    broken = {t.task_id: mutated_samples(domain, rules_, t, right[t.task_id])[1] for t in tasks}
    samples = []
    for i, t in enumerate(tasks):
        good, bad = right[t.task_id], broken[t.task_id]
        samples.append({1: [good, good, good, good],                       # all pass: no contrast
                        2: [bad, "1. **Oops** no spec", bad, "not a plan"],  # none pass: the expert is chosen
                        3: [f"<think>plan it</think>\n{good}", bad, "<think>hm</think>\n" + bad, good],
                        4: ["", "   ", good, good]}                         # the only failures are blank
                       .get(i, [bad, good, "not a plan at all", good]))
    return tasks, policy_prompts(tasks, rules_, 0), samples, verifier, right


def test_pairs_choose_a_passing_sample_and_reject_the_worst_failing_one():
    tasks, prompts, samples, verifier, right = _scripted()
    pairs, stats = policy_preference_pairs(tasks, prompts, samples, verifier, right)
    by_task = {p.task_id: p for p in pairs}
    assert stats.skipped_task_ids == (tasks[1].task_id, tasks[4].task_id) and stats.skipped_no_contrast == 2
    assert stats.pairs == len(pairs) == len(tasks) - 2 and stats.chosen_from_expert == 1
    assert stats.samples == 4 * len(tasks) and stats.as_metadata()["preference_skipped_no_contrast"] == 2
    by_id = {t.task_id: t for t in tasks}
    for p in pairs:
        task = by_id[p.task_id]
        assert verifier.verify_trajectory(task, p.chosen).passed
        rejected = verifier.verify_trajectory(task, p.rejected)
        assert not rejected.passed and p.metadata["rejected_score"] == rejected.score
        texts = [strip_think(s) for s in samples[tasks.index(task)]]          # as evaluation reads them
        failing = [verifier.verify_trajectory(task, s).score for s in texts
                   if s.strip() and not verifier.verify_trajectory(task, s).passed]
        assert rejected.score == min(failing)                                   # the worst failing sample
        assert p.prompt == prompts[tasks.index(task)] and "<think>" not in p.chosen + p.rejected
    # No sample passed: the verified expert trajectory is chosen, and the pair says so.
    assert by_task[tasks[2].task_id].chosen == right[tasks[2].task_id]
    assert by_task[tasks[2].task_id].metadata["chosen_from"] == "expert_trajectory"
    assert by_task[tasks[0].task_id].metadata["chosen_from"] == "policy_sample"
    assert by_task[tasks[0].task_id].rejected == "not a plan at all"          # format failure scores lowest
    # Without a verified expert trajectory, a task with no passing sample gives no pair either.
    _, stats = policy_preference_pairs(tasks[2:3], prompts[2:3], samples[2:3], verifier, {})
    assert stats.pairs == 0 and stats.skipped_no_contrast == 1

    # Both providers that tune on pairs accept them as they are.
    source = DatasetSource(MT, preference=tuple(pairs))
    for name in ("openai", "vertex"):
        tuner = get_provider(name, client=object())
        base = {"openai": "gpt-4.1-mini-2025-04-14", "vertex": "gemini-2.5-flash"}[name]
        records = tuner.prepare_dataset("preference", source, base_model=base)
        tuner.validate_dataset("preference", records, base_model=base)
        assert len(records) == len(pairs) and "metadata" not in json.dumps(records)


def test_pairs_from_policy_samples_the_verified_tasks_on_the_evaluation_prompts():
    rows, tasks, domain, rules_ = trajectory_rows(6)
    rows[0] = {**rows[0], "trajectory": rows[0]["trajectory"].replace("Final spec", "Last spec")}  # fails now
    seen = []

    def sampler(prompts):
        seen.extend(prompts)
        return [["nope", expert(domain, rules_, t)] for t in tasks[1:4]]

    pairs, stats = pairs_from_policy(rows, tasks, domain, rules_, 0, sampler, max_tasks=3)
    assert seen == policy_prompts(tasks[1:4], rules_, 0)                      # verified rows only, at most 3
    assert [p.task_id for p in pairs] == [t.task_id for t in tasks[1:4]] and stats.tasks == 3


# --------------------------------------------------------------------------- through the asset
@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A DuckDB file with verified trajectories, the trajectories materialization's metadata, and a tiny
    checkpoint published to a local store."""
    root = tmp_path_factory.mktemp("prefs")
    db = root / "template.duckdb"
    with dg.instance_for_test() as instance:
        res = {"duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
               "teacher": TeacherResource(), "training": TrainingResource(work_root=str(root / "work"))}
        assert dg.materialize([rules, task_examples, trajectories], partition_key=MT, resources=res, instance=instance,
                              run_config={"ops": {"task_examples": {"config": {"n_train": 12, "n_eval": 4,
                                                                                "seed": 2}}}}).success
        rec = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("trajectories"),
                                                                    asset_partitions=[MT]), limit=1).records[0]
        traj_meta = dict(rec.asset_materialization.metadata)
    rows = DuckDBStore(database=str(db)).read("trajectories", MT).to_dict("records")
    ckpt = tiny_checkpoint(root / "tiny", [r["prompt"] for r in rows] + [r["trajectory"] for r in rows])
    store = LocalCheckpointStore(root=str(root / "checkpoints"))
    key = f"rlvr/{MT}/run-tiny"
    info = store.publish(str(ckpt), key)
    return db, traj_meta, store, key, info.sha256


@pytest.fixture
def env(seeded, tmp_path):
    """A fresh instance (no rlvr_checkpoint yet) that knows the trajectories materialization."""
    template, traj_meta, store, key, sha = seeded
    db = tmp_path / "srl.duckdb"
    shutil.copy(template, db)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("trajectories", partition=MT, metadata=traj_meta))
        resources = {"duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
                     "training": TrainingResource(work_root=str(tmp_path / "work")), "checkpoint_store": store,
                     "paid": PaidFineTuningResource(openai_base_url="http://127.0.0.1:9/v1", today="2026-12-01")}
        yield instance, resources, key, sha


def _jobs(instance, resources, config):
    return dg.materialize([paid_finetune_jobs], partition_key=MT, resources=resources, instance=instance,
                          run_config={"ops": {"paid_finetune_jobs": {"config": config}}}, raise_on_error=False)


def _meta(result):
    return {k: v.value for k, v in result.asset_materializations_for_node("paid_finetune_jobs")[0].metadata.items()}


def test_policy_source_without_a_checkpoint_names_the_asset_to_materialize(env):
    instance, resources, _, _ = env
    result = _jobs(instance, resources, PREF)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = str(failure.event_specific_data.error)
    assert "rlvr_checkpoint[personality] has no materialization" in message
    assert "Materialize rlvr_checkpoint for personality" in message and "preference_source: mutated" in message
    assert JobStore(resources["duckdb_store"]).jobs().empty
    # The explicit fallback needs no checkpoint: the expert trajectory against mutated copies.
    result = _jobs(instance, resources, {**PREF, "preference_source": "mutated"})
    meta = _meta(result)
    assert result.success and meta["preference_source"] == "mutated" and meta["preference_pairs"] > 0
    assert "policy_checkpoint_sha256" not in meta
    # Supervised jobs never need the checkpoint.
    assert _jobs(instance, resources, {}).success


def test_pairs_come_from_the_checkpoint_that_rlvr_checkpoint_names(env):
    instance, resources, key, sha = env
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "rlvr_checkpoint", partition=MT, metadata={"checkpoint_key": key, "sha256": sha}))
    result = _jobs(instance, resources, PREF)
    assert result.success
    meta = _meta(result)
    assert meta["preference_source"] == "policy" and meta["policy_checkpoint_sha256"] == sha
    assert meta["policy_checkpoint_key"] == key and meta["lineage"]["rlvr_checkpoint"]["sha256"] == sha
    assert meta["policy_tasks"] == 12 and meta["policy_samples"] == 24
    assert meta["preference_pairs"] + meta["preference_skipped_no_contrast"] == 12 and meta["preference_pairs"] >= 10
    # An untrained policy passes nothing: every chosen side is the verified expert trajectory.
    assert meta["preference_pairs_expert_chosen"] == meta["preference_pairs"]

    store = JobStore(resources["duckdb_store"])
    row = store.jobs().iloc[0]
    assert row.status == "dry_run" and row.method == "preference"
    domain, rules_ = RulesResource().load(MT)
    verifier = Verifier(domain, rules_)
    tasks = {t.task_id: t for t in load_tasks(resources["duckdb_store"], MT)}
    records = [json.loads(line) for line in open(row.dataset_path)]
    provenance = [json.loads(line) for line in open(f"{meta['datasets_dir']}/preference_pairs.provenance.jsonl")]
    assert len(records) == len(provenance) == meta["preference_pairs"]
    for rec, prov in zip(records, provenance, strict=True):
        task = tasks[prov["task_id"]]
        assert verifier.verify_trajectory(task, rec["preferred_output"][0]["content"]).passed
        assert not verifier.verify_trajectory(task, rec["non_preferred_output"][0]["content"]).passed
        assert prov["chosen_from"] == "expert_trajectory" and prov["checkpoint_sha256"] == sha

    # Seeded sampling: a retried run builds the same dataset, so it maps to the same job key.
    assert _jobs(instance, resources, PREF).success
    assert len(store.jobs()) == 1


def test_sample_policy_is_seeded_and_refuses_greedy_copies(seeded, tmp_path):
    _, _, store, key, _ = seeded
    local = store.fetch(key, str(tmp_path / "ckpt"))
    prompts = ["Task: a\nLore:\n\nPlan:\n", "Task: b\nLore:\n\nPlan:\n"]
    first = sample_policy(local, prompts, k=3, temperature=0.8, max_new_tokens=8, seed=1)
    assert [len(s) for s in first] == [3, 3]
    assert sample_policy(local, prompts, k=3, temperature=0.8, max_new_tokens=8, seed=1) == first
    with pytest.raises(ValueError, match="temperature > 0"):
        sample_policy(local, prompts, k=3, temperature=0.0)
