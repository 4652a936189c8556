"""The training child is self-contained: it takes its job from the Pipes extras and reads and writes
its inputs and checkpoints through the configured store, so a Kubernetes or ECS Pipes client can run
it. Here it runs in its own working directory, sharing no files with the parent, against moto's S3
on loopback, for one training stage (base_model)."""

import json
from pathlib import Path

import dagster as dg

from helpers.moto_s3 import moto_s3
from resources.checkpoint_store import checkpoint_store_from_uri
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import ChildProcessClient, TrainingResource, child_env_names
from resources.wandb_resource import WandbResource
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.training import base_model
from srl_assets.assets.trajectories import trajectories
from srl_assets.training.child import localize

REPO = Path(__file__).resolve().parent.parent
URI = "s3://srl-checkpoints/isolated"
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64}


def test_child_runs_in_its_own_directory_through_s3(tmp_path, monkeypatch):
    parent, child = tmp_path / "parent", tmp_path / "child"
    parent.mkdir()
    child.mkdir()
    monkeypatch.chdir(parent)
    with moto_s3(monkeypatch):
        store = checkpoint_store_from_uri(URI)
        # The child: its own cwd and work root; the code comes with the image (here PYTHONPATH).
        client = ChildProcessClient(inherit=child_env_names(URI), cwd=str(child),
                                    env={"SRL_WORK_ROOT": str(child / "work"), "PYTHONPATH": str(REPO)})
        resources = {"duckdb_store": DuckDBStore(database=str(parent / "srl.duckdb")), "rules_resource": RulesResource(),
                     "teacher": TeacherResource(), "checkpoint_store": store,
                     "training": TrainingResource(work_root=str(parent / "work"), job_store_uri=URI),
                     "wandb": WandbResource(mode="disabled", dir=str(parent / "wandb")),
                     "pipes_subprocess_client": client}
        run_config = {"ops": {"task_examples": {"config": {"n_train": 6, "n_eval": 2, "seed": 3}},
                              "base_model": {"config": {"tiny": TINY, "vocab_size": 300, "sft_steps": 2,
                                                        "sft_trajectories": 6, "sft_batch_size": 2}}}}
        with dg.instance_for_test() as instance:
            result = dg.materialize([rules, task_examples, trajectories, srl_steps, base_model], partition_key="tree",
                                    resources=resources, instance=instance, run_config=run_config)
            assert result.success
            meta = result.asset_materializations_for_node("base_model")[0].metadata
        key = meta["checkpoint_key"].value
        assert store.list_keys("base/tree") == [key] and meta["uri"].value == store.uri(key)
        assert store.info(key).sha256 == meta["sha256"].value
        # The job's inputs and output went through the store and were removed after.
        assert store.list_keys("jobs") == []
        fetched = store.fetch(key, str(tmp_path / "check"))
        assert json.loads((Path(fetched) / "summary.json").read_text())["sft"]["steps"] == 2

    # The child worked only in its own folder: its fetched inputs and output are there ...
    assert list((child / "work").rglob("input.jsonl")) and list((child / "work").rglob("child-out"))
    # ... and nothing it wrote is in the parent's (no child work root, no output written in place).
    assert not (parent / "work" / "child").exists()
    assert not list((parent / "work").rglob("child-out"))


def test_a_job_names_no_path_of_the_parent(tmp_path, monkeypatch):
    """What the extras carry for a self-contained child: store references, never a parent path."""
    with moto_s3(monkeypatch):
        training = TrainingResource(work_root=str(tmp_path / "work"), job_store_uri=URI)
        work = training.work_dir("rlvr", "tree", {"x": 1})
        work.mkdir(parents=True)
        (work / "input.jsonl").write_text('{"prompt": "p"}\n')
        spec = {"stage": "rlvr", "model_type": "tree", "work_dir": str(work), "out_dir": str(work / "out"),
                "data": str(work / "input.jsonl"), "config": {"candidates": {"rlvr": "s3://srl-checkpoints/isolated/x"}},
                "model_path": None, "report_to": [], "rules_dir": None}
        job = training.portable_job(spec, rules_dir=None)
        text = json.dumps({k: v for k, v in job.items() if k != "work_root"})
        assert str(tmp_path) not in text and job["store"] == URI
        monkeypatch.setenv("SRL_WORK_ROOT", str(tmp_path / "elsewhere"))
        local = localize({**job, "config": {}})
        assert Path(local["data"]).read_text() == '{"prompt": "p"}\n'
        assert local["data"].startswith(str(tmp_path / "elsewhere"))
