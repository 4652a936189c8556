"""RLVRTrainer: from the SRL checkpoint, reward = the Verifier's score on the final spec.

Algorithms are registered by name: ``grpo`` (TRL GRPOTrainer), ``ppo`` (the project's own
PPOTrainer: TRL removed its PPO in 1.13), ``dpo`` (TRL DPOTrainer on verifier-ranked pairs sampled
from the SRL policy) and ``rft`` (RFTTrainer: rejection-sampling fine-tuning on the policy's own
verified samples, TRL SFTTrainer). Each takes the same inputs and returns the same summary.
``RLVRTrainer``'s default is ``grpo``; which one the pipeline runs is the ``rlvr_checkpoint`` config.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset

from srl_assets.collaboration.verifier import Verifier
from srl_assets.models.tiny import load_model, save_model
from srl_assets.prompt_contract import render_prompt
from srl_assets.prompts import strip_think
from srl_assets.registry import Registry
from srl_assets.reward_normalizer import make_normalizer
from srl_assets.rlvr.checkpoint_selection import BestCheckpointSelector
from srl_assets.rlvr.dpo_trainer import DPOStageConfig, build_preference_pairs, sample_and_rank, train_dpo
from srl_assets.rlvr.ppo_trainer import PPOConfig, PPOTrainer
from srl_assets.rlvr.rft_trainer import RFTTrainer
from srl_assets.rlvr.verifier_reward import make_verifier_reward_fn, parse_task_column
from srl_assets.training.configs import GRPOStageConfig, RFTConfig
from srl_assets.training.grpo_common import (AdaptiveKLCallback, FastRolloutGRPOTrainer, MetricsCallback,
                                             NormalizedReward, resume_point)
from srl_assets.training.processes import world_size


@dataclass
class RLVRInputs:
    model_path: str
    rows: list[dict[str, Any]]  # {"prompt": task + lore, "task": task json[, "fresh": not a stored task]}
    verifier: Verifier
    work_dir: Path
    out_dir: Path
    report_to: list[str]
    on_log: Callable[[dict], None] | None = None
    run_name: str = "rlvr"
    # Held-out validation tasks ({"prompt", "task"}) for best-checkpoint selection (GRPO's eval_steps).
    validation: list[dict[str, str]] = field(default_factory=list)


ALGORITHMS: Registry[Callable[[RLVRInputs, dict[str, Any]], dict[str, Any]]] = Registry("RLVR algorithm")
register_algorithm = ALGORITHMS.register


class RLVRTrainer:
    def __init__(self, algorithm: str = "grpo", config: dict[str, Any] | None = None):
        ALGORITHMS.get(algorithm)  # fails early, naming the valid algorithms
        self.algorithm = algorithm
        self.config = config or {}

    def train(self, inputs: RLVRInputs) -> dict[str, Any]:
        if not inputs.rows:
            raise ValueError("RLVR needs at least one task prompt")
        return {"stage": "rlvr", "algorithm": self.algorithm, **ALGORITHMS.get(self.algorithm)(inputs, self.config)}


@register_algorithm("grpo")
def _grpo(inputs: RLVRInputs, config: dict[str, Any]) -> dict[str, Any]:
    cfg = GRPOStageConfig.from_dict(config)
    model, tokenizer = load_model(inputs.model_path)
    reward = NormalizedReward(make_verifier_reward_fn(inputs.verifier), make_normalizer(cfg.normalizer),
                              cfg.num_generations, "verifier_score")
    metrics_cb = MetricsCallback(inputs.on_log)
    kl_cb = AdaptiveKLCallback(cfg.make_kl_controller(), cfg.rollouts_per_step)
    # TRL's GRPOTrainer, its rollouts sampled by the project's lean sampler where that is exact.
    trainer = FastRolloutGRPOTrainer(
        model=model, reward_funcs=[reward], processing_class=tokenizer,
        args=cfg.trl_config(inputs.work_dir / "trainer", inputs.report_to, inputs.run_name),
        # Rendered by the checkpoint's prompt contract: TRL then feeds the text as it is.
        train_dataset=Dataset.from_list([{**r, "prompt": render_prompt(tokenizer, r["prompt"])}
                                         for r in inputs.rows]),
        callbacks=[metrics_cb, kl_cb])
    kl_cb.trainer = trainer
    selector = _selector(inputs, tokenizer, cfg.eval_steps, cfg.max_completion_length)
    if selector is not None:
        trainer.add_callback(selector)
    resumed_from = resume_point(inputs.work_dir / "trainer")
    trainer.train(resume_from_checkpoint=resumed_from)
    if selector is not None:
        selector.restore_best(trainer.model)
    save_model(trainer.model, tokenizer, inputs.out_dir)
    return {"config": asdict(cfg), "resumed_from": resumed_from, "steps": trainer.state.global_step,
            "processes": world_size(), "rollouts_per_step": trainer.args.generation_batch_size,
            "rollout_sampler": trainer.last_rollout_path,  # "fast" (the lean sampler) or "trl" (TRL's own)
            "log": metrics_cb.logs, "kl_history": kl_cb.history, "raw_reward_history": reward.raw_history,
            "format_violation_rate": statistics.fmean(reward.format_history) if reward.format_history else None,
            "normalizer_stats": reward.normalizer.stats(), **(selector.summary() if selector else {})}


def _selector(inputs: RLVRInputs, tokenizer, eval_steps: int, max_new_tokens: int) -> BestCheckpointSelector | None:
    """Best-checkpoint selection on the validation tasks (None when ``eval_steps`` is 0)."""
    if not eval_steps:
        return None
    if not inputs.validation:
        raise ValueError("eval_steps > 0 needs validation tasks (RLVRInputs.validation is empty)")
    return BestCheckpointSelector([r["prompt"] for r in inputs.validation],
                                  [parse_task_column(r["task"]) for r in inputs.validation],
                                  inputs.verifier, tokenizer, eval_steps, inputs.work_dir / "best",
                                  max_new_tokens=max_new_tokens)


@register_algorithm("rft")
def _rft(inputs: RLVRInputs, config: dict[str, Any]) -> dict[str, Any]:
    """Rejection-sampling fine-tuning. With several rounds and validation tasks, the best round is
    published; one round leaves nothing to choose (the start is never published), so it validates nothing."""
    cfg = RFTConfig(**config)
    make_selector = (lambda tokenizer: _selector(inputs, tokenizer, cfg.sft_steps, cfg.max_new_tokens)) \
        if inputs.validation and cfg.rounds > 1 else None
    return RFTTrainer(cfg, inputs.verifier).train(inputs.model_path, inputs.rows, inputs.work_dir, inputs.out_dir,
                                                  inputs.report_to, inputs.on_log, make_selector)


@register_algorithm("ppo")
def _ppo(inputs: RLVRInputs, config: dict[str, Any]) -> dict[str, Any]:
    cfg = PPOConfig(**config)
    model, tokenizer = load_model(inputs.model_path)
    ref_model = copy.deepcopy(model).eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    # PPOTrainer tokenizes its prompts itself: render them by the checkpoint's prompt contract first.
    tasks = {render_prompt(tokenizer, r["prompt"]): parse_task_column(r["task"]) for r in inputs.rows}

    format_failed: list[bool] = []  # one entry per scored rollout: the Verifier's format/schema verdict

    def reward_fn(prompts: list[str], completions: list[str]) -> list[float]:
        verdicts = [inputs.verifier.verify_trajectory(tasks[p], strip_think(c))
                    for p, c in zip(prompts, completions, strict=True)]
        format_failed.extend(not v.format_ok for v in verdicts)
        return [v.score for v in verdicts]

    trainer = PPOTrainer(model, ref_model, tokenizer, reward_fn, cfg)
    # Checkpoints every save_steps under the work folder; a retry resumes from the latest one.
    log = trainer.train(list(tasks), on_step=inputs.on_log, checkpoint_dir=inputs.work_dir / "trainer")
    save_model(model, tokenizer, inputs.out_dir)
    resumed_from = str(trainer.resumed_from) if trainer.resumed_from is not None else None
    return {"config": asdict(cfg), "resumed_from": resumed_from, "steps": len(log), "log": log,
            "final_kl_coef": trainer.kl_controller.value,
            "format_violation_rate": _rate(format_failed),
            "raw_reward_history": [m["reward_mean"] for m in log]}


@register_algorithm("dpo")
def _dpo(inputs: RLVRInputs, config: dict[str, Any]) -> dict[str, Any]:
    cfg = DPOStageConfig(**config)
    model, tokenizer = load_model(inputs.model_path)
    tasks = {r["prompt"]: parse_task_column(r["task"]) for r in inputs.rows}
    format_failed: list[bool] = []

    def score(prompt: str, completion: str) -> float:
        verdict = inputs.verifier.verify_trajectory(tasks[prompt], strip_think(completion))
        format_failed.append(not verdict.format_ok)
        return verdict.score

    samples = sample_and_rank(model, tokenizer, list(tasks), score, cfg)
    # Sampled from raw prompts (generate renders them); TRL's DPO gets them rendered the same way.
    pairs = [{**p, "prompt": render_prompt(tokenizer, p["prompt"])}
             for p in build_preference_pairs(samples, cfg.min_margin)]
    metrics_cb = MetricsCallback(inputs.on_log)
    resumed_from = resume_point(inputs.work_dir / "trainer")
    trainer = train_dpo(model, tokenizer, pairs, cfg, inputs.work_dir / "trainer", inputs.report_to,
                        [metrics_cb], resumed_from)
    save_model(trainer.model, tokenizer, inputs.out_dir)
    sample_mean = sum(s.score for s in samples) / len(samples)
    return {"config": asdict(cfg), "resumed_from": resumed_from, "steps": trainer.state.global_step,
            "processes": world_size(), "pairs_per_step": trainer.args.per_device_train_batch_size
            * trainer.args.gradient_accumulation_steps * trainer.args.world_size,
            "log": metrics_cb.logs, "pairs": len(pairs), "sample_score_mean": sample_mean,
            "format_violation_rate": _rate(format_failed), "raw_reward_history": [sample_mean]}


def _rate(flags: list[bool]) -> float | None:
    """Share of True flags (None when nothing was scored)."""
    return sum(flags) / len(flags) if flags else None
