"""SRLTrainer: step-wise GRPO against expert steps (Deng et al., 2025, arXiv 2510.25992).

Each prompt is a step instance (task + lore + expert steps 1..k-1); the policy writes
``<think>...</think>`` and one step; the reward is the difflib 2M/T similarity of that step to the
expert's step k (-1 on a format violation). Prompts come pre-filtered by dynamic sampling (the
``normalized_rewards`` asset keeps prompts whose rollouts disagree).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset
from trl import GRPOTrainer

from srl_assets.models.tiny import load_model, save_model
from srl_assets.reward_normalizer import make_normalizer
from srl_assets.srl.step_reward import make_step_reward_fn
from srl_assets.training.configs import GRPOStageConfig
from srl_assets.training.grpo_common import (AdaptiveKLCallback, MetricsCallback,
                                             NormalizedReward, resume_point)
from srl_assets.training.processes import world_size


class SRLTrainer:
    def __init__(self, config: GRPOStageConfig):
        self.config = config

    def train(self, model_path: str, rows: list[dict[str, str]], work_dir: Path, out_dir: Path,
              report_to: list[str] | None = None, on_log: Callable[[dict], None] | None = None,
              run_name: str = "srl") -> dict[str, Any]:
        """Train from ``model_path`` on ``rows`` ({prompt, target}); write the model to ``out_dir``."""
        if not rows:
            raise ValueError("SRL needs at least one step prompt (did dynamic sampling drop them all?)")
        cfg = self.config
        if cfg.eval_steps:
            raise ValueError("eval_steps is RLVR's checkpoint selection on whole tasks; SRL prompts are "
                             "single steps: leave it at 0")
        model, tokenizer = load_model(model_path)
        reward = NormalizedReward(make_step_reward_fn(), make_normalizer(cfg.normalizer),
                                  cfg.num_generations, "step_reward")
        metrics_cb = MetricsCallback(on_log)
        kl_cb = AdaptiveKLCallback(cfg.make_kl_controller(), cfg.rollouts_per_step)
        trainer = GRPOTrainer(
            model=model, reward_funcs=[reward], processing_class=tokenizer,
            args=cfg.trl_config(work_dir / "trainer", report_to or [], run_name),
            train_dataset=Dataset.from_list([{"prompt": r["prompt"], "target": r["target"]} for r in rows]),
            callbacks=[metrics_cb, kl_cb],
        )
        kl_cb.trainer = trainer
        resumed_from = resume_point(work_dir / "trainer")
        trainer.train(resume_from_checkpoint=resumed_from)
        save_model(trainer.model, tokenizer, out_dir)
        return {
            "stage": "srl", "config": asdict(cfg), "resumed_from": resumed_from,
            "steps": trainer.state.global_step, "processes": world_size(),
            "rollouts_per_step": trainer.args.generation_batch_size, "log": metrics_cb.logs, "kl_history": kl_cb.history,
            "final_beta": trainer.beta, "raw_reward_history": reward.raw_history,
            "normalizer_stats": reward.normalizer.stats(),
        }
