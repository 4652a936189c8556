"""Lineage that is true, on the data assets and the instance (the whole chain's lineage is checked in
test_pipeline_assets.py, on the chain it materializes anyway):

* dagster.yaml queues runs and allows one run per partition at a time; the real queue daemon keeps a
  second run of a partition queued while a run of another partition starts;
* data versions come from content, so after a rules change exactly that partition's downstream
  assets are stale; an asset refuses rows that are not the ones its upstream materialization wrote;
* the DuckDB file of an earlier version gains new columns instead of failing;
* retention keeps the newest checkpoints and every checkpoint something still names;
* loading the pool-wait patch never breaks loading the code location.
"""

from __future__ import annotations

import runpy
import shutil
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from dagster._utils.test.data_versions import get_stale_status_resolver
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from resources.checkpoint_store import LocalCheckpointStore
from resources.duckdb_store import DuckDBStore, rows_digest
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.training_support import CHECKPOINTS_TABLE, prune_checkpoints
from srl_assets.assets.trajectories import trajectories
from srl_assets.training import retention

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "srl_assets" / "domains" / "rules"
DATA = [rules, task_examples, trajectories, srl_steps]
TINY_DATA = {"ops": {"task_examples": {"config": {"n_train": 4, "n_eval": 2, "seed": 1}}}}


# --- one run per partition -------------------------------------------------------------------------

def _project_instance_config() -> dict:
    return yaml.safe_load((REPO / "dagster.yaml").read_text())


def test_instance_config_queues_one_run_per_partition(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


class _Workspace:
    """What the queue daemon needs of a workspace when the run launcher is the test launcher."""

    def __init__(self, instance):
        self.instance = instance

    def create_request_context(self):
        return None


def test_queue_daemon_keeps_a_second_run_of_a_partition_queued():
    config = _project_instance_config()
    overrides = {"concurrency": config["concurrency"], "run_coordinator": config["run_coordinator"],
                 "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}}
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("srl_assets"), "__repository__"),
                             "srl_pipeline")
    with dg.instance_for_test(overrides=overrides) as instance:
        runs = {name: create_run_for_test(instance, job_name="srl_pipeline", status=DagsterRunStatus.QUEUED,
                                          tags={"dagster/partition": partition}, remote_job_origin=origin)
                for name, partition in (("plant_1", "plant"), ("plant_2", "plant"), ("tree", "tree"))}
        workspace = _Workspace(instance)

        def iterate():
            with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
                list(daemon.run_iteration(workspace))
            return {name: instance.get_run_by_id(run.run_id).status for name, run in runs.items()}

        status = iterate()
        assert status["plant_1"] == DagsterRunStatus.STARTING and status["tree"] == DagsterRunStatus.STARTING
        assert status["plant_2"] == DagsterRunStatus.QUEUED  # waits for plant's first run
        assert iterate()["plant_2"] == DagsterRunStatus.QUEUED
        instance.report_run_failed(instance.get_run_by_id(runs["plant_1"].run_id))
        assert iterate()["plant_2"] == DagsterRunStatus.STARTING


# --- data versions from content ----------------------------------------------------------------------

def _data_resources(tmp_path, rules_dir):
    return {"duckdb_store": DuckDBStore(database=str(tmp_path / "srl.duckdb")),
            "rules_resource": RulesResource(rules_dir=str(rules_dir)), "teacher": TeacherResource(),
            "training": TrainingResource(work_root=str(tmp_path / "work"))}


def _statuses(instance, partitions) -> dict[tuple[str, str], StaleStatus]:
    """What the UI's stale markers show (Dagster's own resolver, as its data-version tests build it)."""
    resolver = get_stale_status_resolver(instance, DATA)
    return {(a.key.path[-1], p): resolver.get_status(a.key, p) for a in DATA for p in partitions}


def test_a_rules_change_makes_exactly_that_partitions_downstream_stale(tmp_path):
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules_dir)
    resources = _data_resources(tmp_path, rules_dir)
    store = resources["duckdb_store"]
    with dg.instance_for_test() as instance:
        for partition in ("plant", "tree"):
            result = dg.materialize(DATA, partition_key=partition, resources=resources, instance=instance,
                                    run_config=TINY_DATA)
        # Table partitions: the data version is the hash of the stored rows, and a consumer names it.
        meta = {m.asset_key.path[-1]: m.materialization for m in result.get_asset_materialization_events()}
        for table in ("task_examples", "trajectories", "srl_steps"):
            digest = rows_digest(store.read(table, "tree"))
            assert meta[table].metadata["rows_sha256"].value == digest == meta[table].tags["dagster/data_version"]
        assert (meta["srl_steps"].metadata["lineage"].value["trajectories"]["rows_sha256"]
                == meta["trajectories"].metadata["rows_sha256"].value)
        assert set(_statuses(instance, ["plant", "tree"]).values()) == {StaleStatus.FRESH}

        plant_yaml = rules_dir / "plant.yaml"
        plant_yaml.write_text(plant_yaml.read_text() + "\n# a comment is a change of the file, and of the version\n")
        # Until `rules` is materialized again, task_examples refuses the files its lineage does not name.
        result = dg.materialize([task_examples], partition_key="plant", resources=resources, instance=instance,
                                raise_on_error=False)
        assert not result.success
        assert "materialize `rules` first" in str(result.get_step_failure_events()[0].step_failure_data.error)

        # Both partitions' rules again: tree's are unchanged (the same data version), plant's are new.
        for partition in ("plant", "tree"):
            assert dg.materialize([rules], partition_key=partition, resources=resources, instance=instance).success
        # Dagster marks the assets whose inputs changed: plant's task_examples, and nothing of tree.
        status = _statuses(instance, ["plant", "tree"])
        assert {key for key, s in status.items() if s == StaleStatus.STALE} == {("task_examples", "plant")}, status

        # Tasks carry their rules version: plant's new tasks are new content, so plant's trajectories
        # are stale now; tree's are not.
        assert dg.materialize([task_examples], partition_key="plant", resources=resources, instance=instance,
                              run_config=TINY_DATA).success
        status = _statuses(instance, ["plant", "tree"])
        assert {key for key, s in status.items() if s == StaleStatus.STALE} == {("trajectories", "plant")}, status

        # Another writer changes tree's trajectories outside the lineage: srl_steps refuses the rows.
        store.replace_partition("trajectories", "tree", store.read("trajectories", "tree").iloc[1:])
        result = dg.materialize([srl_steps], partition_key="tree", resources=resources, instance=instance,
                                raise_on_error=False)
        assert not result.success
        assert "not the ones its materialization" in str(result.get_step_failure_events()[0].step_failure_data.error)


def test_a_duckdb_file_of_an_earlier_version_gains_new_columns(tmp_path):
    store = DuckDBStore(database=str(tmp_path / "old.duckdb"))
    store.append("performance_history", pd.DataFrame([{"model_type": "plant", "report_id": "r1", "n": 3}]))
    before = rows_digest(store.read("performance_history", "plant"))
    store.append("performance_history", pd.DataFrame([{"model_type": "plant", "report_id": "r2", "n": 4,
                                                       "checkpoint_sha256": "ab" * 32}]))
    rows = store.read("performance_history", "plant").set_index("report_id")
    assert rows.loc["r2", "checkpoint_sha256"] == "ab" * 32 and pd.isna(rows.loc["r1", "checkpoint_sha256"])
    # A column that is null in every row of a partition does not change its content hash.
    assert rows_digest(store.read("performance_history", "plant", "report_id = 'r1'")) == before


# --- retention ---------------------------------------------------------------------------------------

def _publish(tmp_path, checkpoints, store, stage, model_type, i):
    src = tmp_path / "src" / f"{stage}-{model_type}-{i}"
    src.mkdir(parents=True)
    (src / "config.json").write_text(f'{{"i": {i}}}')
    key = f"{stage}/{model_type}/run-{i}"
    info = checkpoints.publish(str(src), key)
    store.append(CHECKPOINTS_TABLE, pd.DataFrame([{
        "model_type": model_type, "stage": stage, "key": key, "uri": info.uri, "sha256": info.sha256,
        "size_bytes": info.size_bytes, "run_id": f"run-{i}", "created_at": f"2025-01-01T00:00:0{i}"}]))
    return key, info.sha256


def test_retention_keeps_the_newest_and_every_named_checkpoint(tmp_path, monkeypatch):
    store = DuckDBStore(database=str(tmp_path / "srl.duckdb"))
    checkpoints = LocalCheckpointStore(root=str(tmp_path / "checkpoints"))
    published = [_publish(tmp_path, checkpoints, store, "srl", "plant", i) for i in range(6)]
    other = _publish(tmp_path, checkpoints, store, "srl", "tree", 0)
    monkeypatch.setenv(retention.KEEP_ENV, "2")
    retention.register_pin_source("test", lambda mt: {published[1][1]} if mt == "plant" else set())
    try:
        with dg.instance_for_test() as instance:
            # The current report names run-0's checkpoint; an older report named run-2's (not protected).
            for named in (published[2], published[0]):
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    "performance_report", partition="plant",
                    metadata={"checkpoints": dg.MetadataValue.json({"srl": {"key": named[0], "sha256": named[1]}})}))
            context = dg.build_asset_context(partition_key="plant", instance=instance)
            deleted = prune_checkpoints(context, checkpoints, store, "srl")
    finally:
        retention.unregister_pin_source("test")
    assert sorted(deleted) == ["srl/plant/run-2", "srl/plant/run-3"]
    assert sorted(checkpoints.list_keys("srl/plant")) == ["srl/plant/run-0", "srl/plant/run-1", "srl/plant/run-4",
                                                          "srl/plant/run-5"]
    assert sorted(store.read(CHECKPOINTS_TABLE, "plant").key) == sorted(checkpoints.list_keys("srl/plant"))
    assert checkpoints.is_complete(other[0])  # another partition is never touched


def test_retention_prunes_old_work_folders_and_fetched_copies(tmp_path):
    import os
    import time

    parent = tmp_path / "srl" / "plant"
    for i in range(4):
        (parent / f"digest{i}").mkdir(parents=True)
        os.utime(parent / f"digest{i}", (time.time() - 100 + i, time.time() - 100 + i))
    (tmp_path / "rlvr" / "plant" / "other").mkdir(parents=True)
    removed = retention.prune_work_folders(tmp_path, "srl", "plant", keep=2)
    assert sorted(p.name for p in removed) == ["digest0", "digest1"]
    assert sorted(p.name for p in parent.iterdir()) == ["digest2", "digest3"]
    assert (tmp_path / "rlvr" / "plant" / "other").is_dir()
    for sha in ("a" * 64, "b" * 64):
        (tmp_path / "fetched" / sha[:16]).mkdir(parents=True)
    retention.prune_fetched(tmp_path, kept_sha256={"a" * 64}, all_sha256={"a" * 64, "b" * 64})
    assert [p.name for p in (tmp_path / "fetched").iterdir()] == ["a" * 16]


def test_keep_count_is_validated(monkeypatch):
    monkeypatch.setenv(retention.KEEP_ENV, "three")
    with pytest.raises(ValueError, match="SRL_KEEP_CHECKPOINTS must be a non-negative integer"):
        retention.keep_count()


# --- the pool-wait patch -----------------------------------------------------------------------------

def test_a_changed_dagster_internal_switches_the_pool_wait_patch_off_with_a_warning(monkeypatch):
    from dagster._core.execution.plan import instance_concurrency_context as module

    from srl_assets import dagster_fixes

    monkeypatch.delattr(module.InstanceConcurrencyContext, "interval_to_next_pending_claim_check")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = runpy.run_path(dagster_fixes.__file__)  # a fresh copy: the imported module stays as it is
    assert not loaded["INSTALLED"] and loaded["_UPSTREAM"] is None and not loaded["is_fixed_upstream"]()
    assert any("pool waits are left as Dagster does them" in str(w.message) for w in caught)
