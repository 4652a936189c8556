"""The four data assets materialize per partition, their checks pass, and seven partitions
materialized at once (one process each) lose no row and hit no DuckDB lock error."""

import os
import subprocess
import sys

import dagster as dg

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import trajectories
from srl_assets.domains import MODEL_TYPES

ASSETS = [rules, task_examples, trajectories, srl_steps]
SELECTION = "rules,task_examples,trajectories,srl_steps"


def _resources(db):
    return {"duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
            "teacher": TeacherResource(), "training": TrainingResource(work_root=str(db.parent / "work"))}


def test_materialize_four_assets_in_process(tmp_path):
    db = tmp_path / "srl.duckdb"
    config = {"ops": {"task_examples": {"config": {"n_train": 12, "n_eval": 6, "seed": 11}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS, partition_key="facial", resources=_resources(db),
                                instance=instance, run_config=config)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == {"every_trajectory_passes_verifier", "steps_reassemble_trajectories"}
        assert all(c.passed for c in checks)
        mats = {m.asset_key.path[-1]: m for m in result.get_asset_materialization_events()}
        traj_meta = mats["trajectories"].materialization.metadata
        assert traj_meta["accepted"].value == 12 and traj_meta["rejected"].value == 0
        assert "Final spec" in traj_meta["preview"].value
        assert mats["task_examples"].materialization.metadata["seed"].value == 11
        version = instance.get_latest_data_version_record(dg.AssetKey("rules"), partition_key="facial")
        assert version is not None
    store = DuckDBStore(database=str(db))
    tasks = store.read("task_examples", "facial")
    assert (tasks.split == "train").sum() == 12 and (tasks.split == "eval").sum() == 6
    assert len(store.read("trajectories", "facial")) == 12
    assert len(store.read("srl_steps", "facial")) >= 12 * 3


def test_two_materializations_draw_different_tasks(tmp_path):
    db = tmp_path / "srl.duckdb"
    ids = []
    with dg.instance_for_test() as instance:
        for _ in range(2):
            assert dg.materialize([rules, task_examples], partition_key="sound", resources=_resources(db),
                                  instance=instance).success
            ids.append(set(DuckDBStore(database=str(db)).read("task_examples", "sound").task_id))
    assert ids[0] != ids[1]


def test_seven_partitions_at_once_lose_no_row(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(open("dagster.yaml").read())
    # Create the instance's SQLite storage once, as `make` does for .dagster_home: seven processes
    # initialising a fresh home at the same moment race on its schema migrations.
    dg.DagsterInstance.from_config(str(home)).dispose()
    env = {**os.environ, "DAGSTER_HOME": str(home), "SRL_DUCKDB_PATH": str(tmp_path / "srl.duckdb")}
    config = tmp_path / "run.yaml"
    config.write_text("ops: {task_examples: {config: {n_train: 40, n_eval: 10}}}\n")
    procs = {mt: subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m",
                                   "srl_assets.definitions", "--select", SELECTION, "--partition", mt,
                                   "-c", str(config)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for mt in MODEL_TYPES}
    outputs = {mt: p.communicate(timeout=600)[0] for mt, p in procs.items()}
    for mt, p in procs.items():
        assert p.returncode == 0, outputs[mt][-3000:]
        assert "lock" not in outputs[mt].lower() or "Conflicting lock" not in outputs[mt]
    store = DuckDBStore(database=str(tmp_path / "srl.duckdb"))
    for table in ("task_examples", "trajectories", "srl_steps"):
        df = store.read(table)
        assert set(df.model_type) == set(MODEL_TYPES), table
    tasks = store.read("task_examples")
    assert tasks.groupby("model_type").size().to_dict() == {mt: 40 + 10 for mt in MODEL_TYPES}
    trajs = store.read("trajectories")
    assert trajs.groupby("model_type").size().to_dict() == {mt: 40 for mt in MODEL_TYPES}
