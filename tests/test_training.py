"""Training stages end to end on a tiny model (CPU, a handful of steps): each algorithm trains,
its checkpoint reloads through the Auto classes and generates; the adaptive KL controller changes
the coefficient SRL's step-wise GRPO loss uses; DPO pairs are ranked by the verifier; a killed child
resumes (SRL's own trainer and the SFT warm start)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srl_assets.collaboration.lore_retriever import LoreRetriever, lore_block
from srl_assets.collaboration.teacher_planner import make_teacher
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.models.tiny import generate, load_model
from srl_assets.prompts import task_prompt
from srl_assets.rlvr.dpo_trainer import ScoredSample, build_preference_pairs
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.rules_integration import RulesIntegration
from srl_assets.srl.step_instances import build_step_instances
from srl_assets.training.stages import run_stage, write_rows

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 1024}
GRPO_TINY = {"max_steps": 2, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 24,
             "save_steps": 1, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def plant_data():
    rules = RulesIntegration().load("plant")
    domain = get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(8, "train", 1)
    retriever = LoreRetriever(rules, k=1)
    teacher = make_teacher("procedural", domain, rules)
    data = []
    for task in tasks:
        lore = lore_block(retriever.retrieve(task))
        trajectory = teacher.plan(task, [])
        data.append((task, lore, trajectory, build_step_instances(task.task_id, task.prompt, lore, trajectory)))
    return data


def _spec(tmp: Path, stage: str, rows, config, model_path=None, name=None):
    work = tmp / (name or stage)
    work.mkdir(parents=True, exist_ok=True)
    write_rows(work / "input.jsonl", rows)
    return {"stage": stage, "model_type": "plant", "rules_dir": None, "work_dir": str(work / "work"),
            "out_dir": str(work / "out"), "data": str(work / "input.jsonl"), "config": config,
            "model_path": model_path, "report_to": []}


@pytest.fixture(scope="module")
def base_path(tmp_path_factory, plant_data):
    tmp = tmp_path_factory.mktemp("base")
    rows = [{"kind": "corpus", "text": t} for task, lore, traj, _ in plant_data for t in (task.prompt, lore, traj)]
    rows += [{"kind": "sft", "prompt": task_prompt(task.prompt, lore), "completion": traj} for task, lore, traj, _ in plant_data]
    rows += [{"kind": "sft", "prompt": i.prompt, "completion": _step_completion(i)}
             for *_, steps in plant_data for i in steps[:2]]
    spec = _spec(tmp, "base", rows, {"vocab_size": 300, "tiny": TINY, "sft_steps": 3, "sft_batch_size": 4})
    summary = run_stage(spec, lambda row: None)
    assert summary["parameters"] < 1_000_000 and summary["sft"]["steps"] == 3
    return spec["out_dir"]


def _step_completion(instance) -> str:
    """What the policy writes after a step prompt: the rest of step k's line (the prompt may end with
    its number and title) and the line break that ends it; no think block."""
    partial = instance.prompt.rsplit("\n", 1)[-1]
    assert instance.target.startswith(partial)
    return instance.target[len(partial):] + "\n"


def _srl_rows(plant_data):
    """SRL rows in the evaluation's prompt format: task prompt + expert steps 1..k-1, target step k."""
    rows = [{"prompt": i.prompt, "target": i.target} for *_, steps in plant_data for i in steps]
    assert all(r["prompt"].startswith("Task: ") and "<think>" not in r["prompt"] + r["target"] for r in rows)
    return rows


def _rlvr_rows(plant_data):
    return [{"prompt": task_prompt(task.prompt, lore), "task": task_column(task)} for task, lore, *_ in plant_data]


def _reloads_and_generates(path):
    model, tokenizer = load_model(path)
    out = generate(model, tokenizer, ["Task: a shrub\nPlan:\n"], max_new_tokens=5)
    assert isinstance(out[0], str)
    assert {"config.json", "model.safetensors", "summary.json", "training_config.json"} <= set(os.listdir(path))


def test_srl_with_adaptive_kl_changes_the_loss_coefficient(tmp_path, base_path, plant_data):
    config = {**GRPO_TINY, "max_steps": 3, "beta": 0.1, "kl_controller": "adaptive", "kl_target": 1e-6,
              "kl_horizon": 10.0, "normalizer": "running"}
    spec = _spec(tmp_path, "srl", _srl_rows(plant_data), config, base_path)
    summary = run_stage(spec, lambda row: None)
    from srl_assets.training.child import _write_summary
    _write_summary(spec, summary)
    assert summary["steps"] == 3
    history = summary["kl_history"]
    assert len(history) == 3
    # Step 1: the policy still equals the reference, KL = 0, so beta shrinks by (1 - 0.2 * 4 / 10).
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-9) and history[0]["beta"] == pytest.approx(0.092)
    # Every later step applies beta <- beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon).
    beta = history[0]["beta"]
    for h in history[1:]:
        beta *= 1 + max(-0.2, min(0.2, h["kl"] / 1e-6 - 1)) * 4 / 10.0
        assert h["beta"] == pytest.approx(beta)
    betas = [h["beta"] for h in history]
    assert len(set(betas)) == 3
    assert summary["final_beta"] == betas[-1]  # the coefficient the next step's loss would read
    assert summary["trainer"] == "step_grpo"
    assert summary["normalizer_stats"]["running_count"] == 3 * 2 * 2
    _reloads_and_generates(spec["out_dir"])


@pytest.mark.parametrize("algorithm,config", [
    ("grpo", {**GRPO_TINY, "max_completion_length": 40}),
    ("ppo", {"num_steps": 2, "batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 16, "learning_rate": 1e-3}),
    ("dpo", {"max_steps": 2, "samples_per_prompt": 2, "batch_size": 2, "max_new_tokens": 40, "min_margin": -1.0}),
    ("rft", {"prompts_per_round": 2, "samples_per_prompt": 2, "max_new_tokens": 24, "min_score": 0.0,
             "sft_steps": 2, "batch_size": 2}),
])
def test_each_rlvr_algorithm_trains_and_reloads(tmp_path, base_path, plant_data, algorithm, config):
    spec = _spec(tmp_path, "rlvr", _rlvr_rows(plant_data), {"algorithm": algorithm, **config}, base_path)
    summary = run_stage(spec, lambda row: None)
    from srl_assets.training.child import _write_summary
    _write_summary(spec, summary)
    assert summary["algorithm"] == algorithm and summary["steps"] == 2
    assert all(0.0 <= r <= 1.0 for r in summary["raw_reward_history"])
    # Every algorithm counts the Verifier's format/schema failures: 40 new tokens or fewer cannot hold a whole
    # trajectory with its final spec, so every rollout fails the format (a rate of 0 by construction would fail).
    assert summary["format_violation_rate"] == 1.0
    _reloads_and_generates(spec["out_dir"])


def test_dpo_pairs_are_ranked_by_verifier_score():
    samples = [ScoredSample("p1", "a", 0.2), ScoredSample("p1", "b", 0.9), ScoredSample("p1", "c", 0.5),
               ScoredSample("p2", "x", 0.4), ScoredSample("p2", "y", 0.4),  # a tie says nothing: no pair
               ScoredSample("p3", "m", 1.0), ScoredSample("p3", "n", 0.0)]
    pairs = build_preference_pairs(samples)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("p1", "b", "a"), ("p3", "m", "n")]
    assert build_preference_pairs(samples, min_margin=0.8) == [{"prompt": "p3", "chosen": "m", "rejected": "n",
                                                                "chosen_score": 1.0, "rejected_score": 0.0}]


def test_rollouts_drop_zero_variance_prompts(tmp_path, base_path, plant_data):
    config = {"target_prompts": 4, "num_generations": 3, "max_completion_length": 16, "temperature": 1.0}
    pool = [{"task_id": i.task_id, "step_index": i.step_index, "prompt": i.prompt, "target": i.target}
            for *_, steps in plant_data for i in steps][:12]
    spec = _spec(tmp_path, "rollouts", pool, config, base_path)
    summary = run_stage(spec, lambda row: None)
    rows = [json.loads(l) for l in open(Path(spec["out_dir"]) / "rollouts.jsonl")]
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault((r["task_id"], r["step_index"]), []).append(r)
    for group in by_prompt.values():
        spread = max(r["raw_reward"] for r in group) - min(r["raw_reward"] for r in group)
        assert all(r["informative"] == (r["group_std"] > 1e-3) for r in group)
        assert (spread == 0) <= (not group[0]["informative"])
    assert summary["informative_prompts"] == sum(g[0]["informative"] for g in by_prompt.values())


def _kill_after_first_checkpoint(spec: dict, tmp_path: Path, checkpoint_dir: Path, first: str,
                                 before_resume=lambda: None, marker: str = "trainer_state.json") -> dict:
    """Run the child by hand, SIGKILL it once ``first`` is saved (its ``marker`` file, written last,
    is there), (call ``before_resume``,) run it again; return its summary."""
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "srl_assets.training.child", "--spec", str(spec_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (checkpoint_dir / first / marker).exists():
        assert proc.poll() is None, "child ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "child finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (Path(spec["out_dir"]) / "summary.json").exists()  # nothing that looks finished
    before_resume()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return json.loads((Path(spec["out_dir"]) / "summary.json").read_text())


def _resumed_step(resumed_from: str | None) -> int:
    assert resumed_from and Path(resumed_from).name.startswith("checkpoint-")
    return int(Path(resumed_from).name.split("-")[1])


def test_killed_child_resumes_from_its_checkpoint(tmp_path, base_path, plant_data):
    from srl_assets.srl.step_grpo import STATE_FILE

    config = {**GRPO_TINY, "max_steps": 16, "save_steps": 2}
    spec = _spec(tmp_path, "srl", _srl_rows(plant_data), config, base_path)
    trainer_dir = Path(spec["work_dir"]) / "trainer"
    summary = _kill_after_first_checkpoint(spec, tmp_path, trainer_dir, "checkpoint-2", marker=STATE_FILE)
    assert summary["steps"] == 16 and [r["step"] for r in summary["log"]] == list(range(1, 17))
    assert _resumed_step(summary["resumed_from"]) >= 2
    # The last two complete checkpoints are kept (none is written after the final step).
    assert sorted(p.name for p in trainer_dir.iterdir()) == ["checkpoint-12", "checkpoint-14"]
    assert all((p / STATE_FILE).is_file() and (p / "optimizer.pt").is_file() for p in trainer_dir.iterdir())
    _reloads_and_generates(spec["out_dir"])


def test_killed_warm_start_resumes_from_its_checkpoint(tmp_path, plant_data):
    rows = [{"kind": "corpus", "text": t} for task, lore, traj, _ in plant_data for t in (task.prompt, traj)]
    rows += [{"kind": "sft", "prompt": task_prompt(task.prompt, ""), "completion": traj} for task, _, traj, _ in plant_data]
    config = {"vocab_size": 300, "tiny": TINY, "sft_steps": 150, "sft_batch_size": 4, "save_steps": 5}
    spec = _spec(tmp_path, "base", rows, config)
    summary = _kill_after_first_checkpoint(spec, tmp_path, Path(spec["work_dir"]) / "sft", "checkpoint-5")
    assert summary["sft"]["steps"] == 150
    assert _resumed_step(summary["resumed_from"]) >= 5
    _reloads_and_generates(spec["out_dir"])


def test_micro_batches_give_the_same_update_as_one_pass(tmp_path, base_path, plant_data):
    """micro_batch_size only splits the step's rollouts into gradient-accumulated passes (how a real
    model's 64+ rollouts fit in GPU memory): same seed, same rollouts, so the same weights."""
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    from srl_assets.training.configs import GRPOStageConfig

    def length_reward(prompts, completions, **kwargs):  # varies within every group, unlike an untrained verifier
        return [float(len(c)) / 100 for c in completions]

    weights = {}
    for micro in (0, 2):
        model, tokenizer = load_model(base_path)
        cfg = GRPOStageConfig(**{**GRPO_TINY, "max_steps": 1, "micro_batch_size": micro})
        trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], processing_class=tokenizer,
                              args=cfg.trl_config(tmp_path / f"micro{micro}", [], "micro"),
                              train_dataset=Dataset.from_list(_rlvr_rows(plant_data)))
        trainer.train()
        weights[micro] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    base = load_model(base_path)[0].state_dict()
    assert any(not torch.equal(weights[0][k], base[k]) for k in base)  # the step did move the weights
    for k in base:
        torch.testing.assert_close(weights[2][k], weights[0][k], rtol=1e-4, atol=1e-6)


def test_micro_batch_size_must_divide_the_rollouts(tmp_path):
    from srl_assets.training.configs import GRPOStageConfig

    with pytest.raises(ValueError, match=r"micro_batch_size must be 0 or divide .*\(12\), got 5"):
        GRPOStageConfig(prompts_per_step=3, num_generations=4, micro_batch_size=5)
    args = GRPOStageConfig(prompts_per_step=3, num_generations=4, micro_batch_size=6).trl_config(
        tmp_path, [], "x")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.generation_batch_size) == (6, 2, 12)
