"""Interrupted training resumes from its last complete checkpoint when the op is retried.

PPO (the project's own trainer, through the rlvr stage): an interrupted run resumes and ends with
the full step count and every metrics row; a killed training child resumes. TRL's GRPO (the rlvr
stage, algorithm grpo) with the adaptive KL controller: the coefficient (and its history) saved in
the checkpoint is restored into the controller and ``trainer.beta`` instead of restarting from the
initial beta. SRL's own step-wise GRPO (srl_assets/srl/step_grpo.py) does the same through its
``srl_state.json``. A checkpoint a killed run left half-written is never resumed from.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerState

from srl_assets.rlvr.ppo_trainer import CHECKPOINT_MARKER
from srl_assets.training.configs import GRPOStageConfig
from srl_assets.training.grpo_common import AdaptiveKLCallback, resume_point
from srl_assets.training.stages import run_stage
# The tiny base model, the plant data and the kill-and-resume helper of the training tests.
from test_training import (GRPO_TINY, _kill_after_first_checkpoint, _resumed_step, _rlvr_rows, _spec,  # noqa: F401
                           _srl_rows, base_path, plant_data)

PPO_TINY = {"algorithm": "ppo", "batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 16, "learning_rate": 1e-3,
            "kl_coef": 0.1, "kl_controller": "adaptive", "kl_target": 1.0, "kl_horizon": 100.0}
SRL_ADAPTIVE = {**GRPO_TINY, "max_steps": 3, "save_steps": 1, "beta": 0.1, "kl_controller": "adaptive",
                "kl_target": 1e-6, "kl_horizon": 10.0}
GRPO_ADAPTIVE = {"algorithm": "grpo", **SRL_ADAPTIVE, "eval_steps": 0}


class Interrupted(Exception):
    pass


def interrupt_at(step: int):
    """A stage reporter that raises on the first row of `step`: the run dies there."""

    def report(row):
        if row.get("step", 0) >= step:
            raise Interrupted

    return report


def test_interrupted_ppo_stage_resumes_and_reports_it(tmp_path, base_path, plant_data):
    spec = _spec(tmp_path, "rlvr", _rlvr_rows(plant_data), {**PPO_TINY, "num_steps": 4, "save_steps": 2}, base_path)
    with pytest.raises(Interrupted):
        run_stage(spec, interrupt_at(2))  # step index 2 = the third: checkpoint-2 is written
    trainer_dir = Path(spec["work_dir"]) / "trainer"
    assert sorted(p.name for p in trainer_dir.iterdir()) == ["checkpoint-2"]
    saved = json.loads((trainer_dir / "checkpoint-2" / "trainer_state.json").read_text())

    summary = run_stage(spec, lambda row: None)
    assert summary["resumed_from"] == str(trainer_dir / "checkpoint-2")
    assert summary["steps"] == 4 and [row["step"] for row in summary["log"]] == [0, 1, 2, 3]
    assert summary["log"][:2] == saved["metrics"]
    # The KL coefficient went on from the saved one: step 2 used it.
    assert summary["log"][2]["kl_coef"] == saved["kl_controller"]["value"] != PPO_TINY["kl_coef"]

    # A retry after the run finished (e.g. killed before it was published): nothing left to train.
    again = run_stage(spec, lambda row: None)
    assert again["resumed_from"] == str(trainer_dir / "checkpoint-4")
    assert again["steps"] == 4 and again["log"] == summary["log"]


def test_killed_ppo_child_resumes_from_its_checkpoint(tmp_path, base_path, plant_data):
    config = {**PPO_TINY, "num_steps": 40, "save_steps": 4}
    spec = _spec(tmp_path, "rlvr", _rlvr_rows(plant_data), config, base_path)
    trainer_dir = Path(spec["work_dir"]) / "trainer"
    summary = _kill_after_first_checkpoint(spec, tmp_path, trainer_dir, "checkpoint-4")
    assert summary["algorithm"] == "ppo" and summary["steps"] == 40
    assert [row["step"] for row in summary["log"]] == list(range(40))
    assert _resumed_step(summary["resumed_from"]) >= 4
    assert sorted(p.name for p in trainer_dir.iterdir()) == ["checkpoint-36", "checkpoint-40"]
    assert all((p / CHECKPOINT_MARKER).is_file() for p in trainer_dir.iterdir())


def _follows_the_adaptive_rule(history: list[dict], beta: float) -> None:
    """beta <- beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon), from ``beta`` on."""
    for h in history:
        beta *= 1 + max(-0.2, min(0.2, h["kl"] / 1e-6 - 1)) * 4 / 10.0
        assert h["beta"] == pytest.approx(beta)


def test_grpo_resume_restores_the_adaptive_kl_coefficient(tmp_path, base_path, plant_data):
    spec = _spec(tmp_path, "rlvr", _rlvr_rows(plant_data), GRPO_ADAPTIVE, base_path)
    with pytest.raises(Interrupted):
        run_stage(spec, interrupt_at(2))  # dies logging step 2, before checkpoint-2 is saved
    checkpoint = Path(spec["work_dir"]) / "trainer" / "checkpoint-1"
    assert resume_point(checkpoint.parent) == str(checkpoint)
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    saved = state.stateful_callbacks["AdaptiveKLCallback"]["attributes"]
    saved_beta = saved["controller"]["value"]
    # Step 1 measured KL 0 (policy = reference): beta shrank by (1 - 0.2 * 4 / 10).
    assert saved_beta == pytest.approx(0.092) and saved["history"][0]["beta"] == saved_beta

    # What the resumed Trainer does before its first step: controller and trainer.beta restored.
    controller = GRPOStageConfig.from_dict({k: v for k, v in GRPO_ADAPTIVE.items() if k != "algorithm"}
                                           ).make_kl_controller()
    callback = AdaptiveKLCallback(controller, samples_per_step=4)
    callback.trainer = SimpleNamespace(beta=0.1)
    callback.on_train_begin(None, state, None)
    assert controller.value == saved_beta and callback.trainer.beta == saved_beta
    assert callback.history == saved["history"]

    summary = run_stage(spec, lambda row: None)
    assert summary["algorithm"] == "grpo"
    assert _resumed_step(summary["resumed_from"]) == 1 and summary["steps"] == 3
    history = summary["kl_history"]
    assert [h["step"] for h in history] == [1, 2, 3] and history[0] == saved["history"][0]
    # Step 2 continued from the saved coefficient, not from the initial beta 0.1.
    _follows_the_adaptive_rule(history[1:], saved_beta)


def test_srl_resume_restores_the_adaptive_kl_coefficient(tmp_path, base_path, plant_data):
    from srl_assets.srl.step_grpo import STATE_FILE

    spec = _spec(tmp_path, "srl", _srl_rows(plant_data), SRL_ADAPTIVE, base_path)
    with pytest.raises(Interrupted):
        run_stage(spec, interrupt_at(2))  # dies reporting step 2, before checkpoint-2 is saved
    trainer_dir = Path(spec["work_dir"]) / "trainer"
    assert sorted(p.name for p in trainer_dir.iterdir()) == ["checkpoint-1"]
    saved = json.loads((trainer_dir / "checkpoint-1" / STATE_FILE).read_text())
    saved_beta = saved["controller"]["value"]
    # Step 1 measured KL 0 (policy = reference): beta shrank by (1 - 0.2 * 4 / 10).
    assert saved_beta == pytest.approx(0.092) and saved["kl_history"] == [
        {"step": 1, "kl": pytest.approx(0.0, abs=1e-9), "beta": saved_beta}]

    summary = run_stage(spec, lambda row: None)
    assert summary["trainer"] == "step_grpo"
    assert summary["resumed_from"] == str(trainer_dir / "checkpoint-1") and summary["steps"] == 3
    history = summary["kl_history"]
    assert [h["step"] for h in history] == [1, 2, 3] and history[0] == saved["kl_history"][0]
    assert [r["step"] for r in summary["log"]] == [1, 2, 3] and summary["log"][0] == saved["log"][0]
    # Step 2 continued from the saved coefficient, not from the initial beta 0.1.
    _follows_the_adaptive_rule(history[1:], saved_beta)
    assert summary["final_beta"] == history[-1]["beta"]


def test_half_written_trainer_checkpoints_are_not_resumed_from(tmp_path):
    assert resume_point(tmp_path / "missing") is None
    for step, state in [(1, "{}"), (2, '{"global_st'), (3, None)]:  # 2: cut short; 3: never got there
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-10.tmp").mkdir()
    assert resume_point(tmp_path) == str(tmp_path / "checkpoint-1")
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text("{}")
    assert resume_point(tmp_path) == str(tmp_path / "checkpoint-12")  # by step, not by name
