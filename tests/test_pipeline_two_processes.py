"""The whole chain for one partition as on a 2-GPU machine: the stages TRL splits run as two processes.
Its own file so that `make test`'s two pytest-xdist workers can run it beside test_pipeline_assets.py's
chain (each file runs on one worker)."""

import json

from test_pipeline_assets import _materialize_chain
from test_processes import two_gpus


def test_whole_chain_with_two_training_processes_per_stage(tmp_path, monkeypatch):
    """As on a 2-GPU machine (here two CPU processes under the same `accelerate launch --multi_gpu`):
    the stages TRL splits run as two processes, the others (SRL's step-wise GRPO among them) as one; the main process talks to Dagster
    through Pipes, and every checkpoint is published once."""
    two_gpus(monkeypatch)
    mats, store, checkpoints = _materialize_chain(tmp_path, "plant", rlvr_algorithm="grpo")
    assert mats["srl_checkpoint"]["steps"].value == 2 and mats["rlvr_checkpoint"]["selected_step"].value in (1, 2)
    catalog = store.read("checkpoints", "plant")
    assert sorted(catalog.stage) == ["base", "rlvr", "srl"]  # one each, though two processes trained them
    assert all(checkpoints.is_complete(key) for key in catalog.key)
    summaries = {stage: json.loads((tmp_path / "checkpoints" / key / "summary.json").read_text())
                 for stage, key in zip(catalog.stage, catalog.key)}
    # SRL's step-wise GRPO is the project's own single-process loop (srl_assets/training/processes.py).
    # Its rollouts: 2 prompts x (2 generations - 1 expert step per group).
    assert summaries["srl"]["processes"] == 1 and summaries["srl"]["rollouts_per_step"] == 2 * (2 - 1)
    assert summaries["rlvr"]["processes"] == 2 and summaries["base"]["sft"]["examples_per_step"] == 4
