"""Training across several processes, as on a multi-GPU machine, checked here on CPU.

With more than one GPU visible, TrainingResource starts the child with ``accelerate launch
--multi_gpu``. Told that two GPUs are visible, it starts the same command here, and accelerate runs
the two processes on CPU (torch.distributed with the gloo backend): the tests check that the
processes split a step instead of each taking a whole one, that one process writes the published
model and the summary, and that the stages TRL does not split (SRL's own step-wise GRPO among them)
are launched as a single process and refused under a multi-process launch.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.training import TrainingResource
from srl_assets.training.configs import GRPOStageConfig
from srl_assets.training.processes import per_process
from srl_assets.training.stages import run_stage
# The tiny base model and the plant data of the training tests.
from test_training import GRPO_TINY, _reloads_and_generates, _rlvr_rows, _spec, base_path, plant_data  # noqa: F401


def two_gpus(monkeypatch) -> None:
    """Make TrainingResource believe that two GPUs are visible."""
    monkeypatch.setattr(TrainingResource, "_visible_gpus", staticmethod(lambda: 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on two cores


def _launch_two_processes(spec: dict, tmp_path: Path, monkeypatch) -> subprocess.CompletedProcess:
    """Run the child with the command TrainingResource gives a 2-GPU machine, as the op does."""
    two_gpus(monkeypatch)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    command = TrainingResource(work_root=str(tmp_path)).command(spec["stage"], spec["config"])
    assert "accelerate.commands.launch" in command
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([*command, "--spec", str(spec_path)], env=env, capture_output=True, text=True,
                          timeout=600)


def _metric_rows(stdout: str, step: int) -> list[dict]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{\"step\"")]
    return [r for r in rows if r["step"] == step and "loss" in r]


@pytest.mark.parametrize(("stage", "config", "launcher"), [
    ("base", {"sft_steps": 10}, "accelerate"),
    ("srl", {}, "single"),  # SRL's step-wise GRPO is the project's own loop, not a TRL trainer
    ("rlvr", {"algorithm": "grpo"}, "accelerate"),
    ("rlvr", {"algorithm": "dpo"}, "accelerate"),
    ("rlvr", {"algorithm": "ppo"}, "single"),
    ("rlvr", {"algorithm": "rft"}, "single"),
    ("rollouts", {}, "single"),
    ("evaluate", {}, "single"),
])
def test_several_gpus_launch_accelerate_only_for_stages_trl_splits(monkeypatch, tmp_path, stage, config, launcher):
    resource = TrainingResource(work_root=str(tmp_path))
    monkeypatch.setattr(TrainingResource, "_visible_gpus", staticmethod(lambda: 4))
    command = resource.command(stage, config)
    child = ["-m", "srl_assets.training.child"]
    if launcher == "accelerate":
        assert command == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                           "--num_processes", "4", *child]
    else:
        assert command == [sys.executable, *child]
    # One GPU (or none), or the launcher switched off: always a single process.
    assert TrainingResource(work_root=str(tmp_path), accelerate_when_multi_gpu=False).command(stage, config) == \
        [sys.executable, *child]
    monkeypatch.setattr(TrainingResource, "_visible_gpus", staticmethod(lambda: 1))
    assert resource.command(stage, config) == [sys.executable, *child]


def test_step_totals_are_divided_among_processes_or_refused_by_name(monkeypatch):
    assert per_process(8, "prompts_per_step", 2) == 4
    with pytest.raises(ValueError, match=r"sft_batch_size \(6\) must be divisible by the 4 training processes"):
        per_process(6, "sft_batch_size", 4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = GRPOStageConfig(**{**GRPO_TINY, "prompts_per_step": 3})
    with pytest.raises(ValueError, match=r"prompts_per_step \(3\) must be divisible by the 2 training processes"):
        config.trl_config(Path("unused"), [], "test")


@pytest.mark.parametrize(("stage", "config", "named"), [
    ("evaluate", {"candidates": {}}, "the evaluate stage"),
    ("rollouts", {}, "the rollouts stage"),
    ("srl", {}, "the srl stage"),
    ("rlvr", {"algorithm": "ppo"}, "rlvr with algorithm 'ppo'"),
    ("rlvr", {"algorithm": "rft"}, "rlvr with algorithm 'rft'"),
])
def test_a_stage_trl_does_not_split_is_refused_under_several_processes(monkeypatch, tmp_path, stage, config, named):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    spec = _spec(tmp_path, stage, [], config)
    with pytest.raises(ValueError, match=f"{named} runs in one process, but this child is one of WORLD_SIZE=2"):
        run_stage(spec, lambda row: None)
    assert not Path(spec["out_dir"]).exists()  # refused before it made its folders


def test_grpo_in_two_processes_splits_each_step_and_publishes_once(tmp_path, monkeypatch, base_path, plant_data):
    rows = _rlvr_rows(plant_data)
    rows = [{**r, "role": "train"} for r in rows[:6]] + [{**r, "role": "validation"} for r in rows[6:]]
    config = {"algorithm": "grpo", **GRPO_TINY, "max_steps": 4, "save_steps": 2, "eval_steps": 2,
              "prompts_per_step": 2, "num_generations": 2}
    spec = _spec(tmp_path, "rlvr", rows, config, base_path)
    done = _launch_two_processes(spec, tmp_path, monkeypatch)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((Path(spec["out_dir"]) / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    # TRL's own count of a step's rollouts, over both processes: prompts_per_step x num_generations,
    # not twice that (each process rolls out one of the two prompts' groups).
    assert summary["rollouts_per_step"] == 2 * 2
    # The main process validated the start and steps 2 and 4 and published the best step.
    assert [p["step"] for p in summary["validation"]] == [0, 2, 4] and summary["selected_step"] in (2, 4)
    # Each step's metrics were reported once, by the main process.
    assert all(len(_metric_rows(done.stdout, step)) == 1 for step in (1, 2, 3, 4)), done.stdout[-3000:]
    _reloads_and_generates(spec["out_dir"])


def test_dpo_in_two_processes_splits_the_pairs_of_a_step(tmp_path, monkeypatch, base_path, plant_data):
    config = {"algorithm": "dpo", "max_steps": 2, "samples_per_prompt": 2, "batch_size": 4, "max_new_tokens": 24,
              "min_margin": -1.0}
    spec = _spec(tmp_path, "rlvr", _rlvr_rows(plant_data), config, base_path)
    done = _launch_two_processes(spec, tmp_path, monkeypatch)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((Path(spec["out_dir"]) / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2 and summary["pairs_per_step"] == 4
    _reloads_and_generates(spec["out_dir"])


def test_sft_warm_start_in_two_processes_splits_the_batch(tmp_path, monkeypatch, plant_data):
    from test_training import TINY

    rows = [{"kind": "corpus", "text": t} for task, lore, traj, _ in plant_data for t in (task.prompt, traj)]
    rows += [{"kind": "sft", "prompt": task.prompt, "completion": traj} for task, _, traj, _ in plant_data]
    spec = _spec(tmp_path, "base", rows, {"vocab_size": 300, "tiny": TINY, "sft_steps": 3, "sft_batch_size": 4})
    done = _launch_two_processes(spec, tmp_path, monkeypatch)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((Path(spec["out_dir"]) / "summary.json").read_text())
    assert summary["sft"]["steps"] == 3 and summary["sft"]["examples_per_step"] == 4  # 2 per process
    _reloads_and_generates(spec["out_dir"])


def test_only_the_main_process_writes_the_model(tmp_path, monkeypatch, base_path):
    from srl_assets.models.tiny import load_model, save_model

    model, tokenizer = load_model(base_path)
    monkeypatch.setenv("RANK", "1")
    save_model(model, tokenizer, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    monkeypatch.setenv("RANK", "0")
    save_model(model, tokenizer, tmp_path / "main")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "main").iterdir()}
