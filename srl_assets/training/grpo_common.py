"""What the SRL and RLVR GRPO runs share: TRL's ``GRPOTrainer`` plus what TRL 1.16 lacks.

* Reward normalization by the project's RewardNormalizer: the reward function returns normalized
  rewards and TRL is told ``scale_rewards="none"``, so TRL only subtracts the group mean. For
  ``group`` this is exactly GRPO's (r - mean_g) / std_g; for ``batch`` and ``running`` the
  advantage is (r - mean_g) / std_batch or std_running.
* An adaptive KL coefficient (Ziegler et al. 2019): a callback feeds the KL TRL measured at each
  step to the KLController and writes the new coefficient into ``trainer.beta``, the attribute
  GRPO's loss reads (``per_token_loss + self.beta * per_token_kl``).
* Resumable runs: intermediate checkpoints every ``save_steps`` under the work folder; a rerun
  resumes from the last one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig

from srl_assets.kl_controller import KLController, make_kl_controller
from srl_assets.models.tiny import pick_device
from srl_assets.reward_normalizer import RewardNormalizer, normalizer_names


@dataclass
class GRPOStageConfig:
    """Hyperparameters of one GRPO stage (SRL or RLVR). Defaults fit the tiny CPU model."""

    max_steps: int = field(default=20, metadata={"help": "Optimizer steps. The paper trains up to 30 epochs at 7B."})
    learning_rate: float = field(default=2e-4, metadata={"help": "The paper uses 5e-7 at 7B; a 2M-parameter model "
                                                                   "trained from scratch needs far more."})
    prompts_per_step: int = field(default=4, metadata={"help": "Distinct prompts per step (paper: 512 SRL, 128 GRPO)."})
    num_generations: int = field(default=4, metadata={"help": "Rollouts per prompt (paper: 8)."})
    max_completion_length: int = field(default=96, metadata={"help": "Tokens a rollout may write."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of rollouts (paper: 1.0)."})
    beta: float = field(default=0.0, metadata={"help": "Initial KL coefficient (paper: 0). Must be > 0 for 'adaptive'."})
    kl_controller: str = field(default="fixed", metadata={"help": "'fixed' or 'adaptive' (Ziegler et al. 2019)."})
    kl_target: float = field(default=0.05, metadata={"help": "Adaptive KL: target per-token KL."})
    kl_horizon: float = field(default=100.0, metadata={"help": "Adaptive KL: horizon in samples."})
    normalizer: str = field(default="group", metadata={"help": "RewardNormalizer: group | batch | running | none."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip (paper: 1.0)."})
    save_steps: int = field(default=10, metadata={"help": "Intermediate checkpoint interval (for resume)."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and data order."})

    def __post_init__(self) -> None:
        for name in ("max_steps", "prompts_per_step", "save_steps", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares rollouts), got {self.num_generations}")
        if self.normalizer not in normalizer_names():
            raise ValueError(f"normalizer {self.normalizer!r} unknown; known: {normalizer_names()}")
        if self.kl_controller == "adaptive" and self.beta <= 0:
            raise ValueError("kl_controller 'adaptive' needs beta > 0 (a reference model)")
        if self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError("learning_rate and temperature must be > 0")
        make_kl_controller(self.kl_controller, self.beta or 1.0, self.kl_target, self.kl_horizon)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GRPOStageConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown GRPO config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def make_kl_controller(self) -> KLController:
        return make_kl_controller(self.kl_controller, self.beta, self.kl_target, self.kl_horizon)

    def trl_config(self, output_dir: Path, report_to: list[str], run_name: str) -> GRPOConfig:
        device, dtype = pick_device()
        return GRPOConfig(
            output_dir=str(output_dir), run_name=run_name,
            max_steps=self.max_steps, learning_rate=self.learning_rate,
            per_device_train_batch_size=self.prompts_per_step * self.num_generations,
            gradient_accumulation_steps=1,
            num_generations=self.num_generations, max_completion_length=self.max_completion_length,
            temperature=self.temperature, top_k=0, top_p=1.0,
            beta=self.beta, scale_rewards="none",  # the RewardNormalizer scales (see module docstring)
            max_grad_norm=self.max_grad_norm, seed=self.seed, data_seed=self.seed,
            use_cpu=device == "cpu", bf16=dtype == torch.bfloat16,
            activation_checkpointing=False,
            save_strategy="steps", save_steps=self.save_steps, save_total_limit=2,
            logging_steps=1, report_to=report_to, disable_tqdm=True, dataloader_num_workers=0,
        )


class NormalizedReward:
    """Wraps a raw reward function: returns normalized rewards, keeps raw ones and the stats."""

    def __init__(self, raw_fn: Callable[..., list[float]], normalizer: RewardNormalizer, group_size: int,
                 name: str):
        self.raw_fn = raw_fn
        self.normalizer = normalizer
        self.group_size = group_size
        self.__name__ = name
        self.raw_history: list[float] = []  # mean raw reward of each call (one call per step)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        raw = self.raw_fn(prompts, completions, **kwargs)
        normalized = self.normalizer.normalize(raw, self.group_size)
        self.raw_history.append(statistics.fmean(raw))
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("raw_reward_mean", statistics.fmean(raw))
            log_metric("format_violation_rate", sum(r == -1.0 for r in raw) / len(raw))
        return normalized


class AdaptiveKLCallback(TrainerCallback):
    """After each optimizer step, feed TRL's measured KL to the controller and set ``trainer.beta``."""

    def __init__(self, controller: KLController, samples_per_step: int):
        self.controller = controller
        self.samples_per_step = samples_per_step
        self.trainer = None
        self.history: list[dict[str, float]] = []

    def on_step_end(self, args, state, control, **kwargs):
        kl_values = self.trainer._metrics["train"].get("kl", [])
        if kl_values:
            kl = float(kl_values[-1])
            self.controller.update(kl, self.samples_per_step)
            self.trainer.beta = self.controller.value
            self.history.append({"step": state.global_step, "kl": kl, "beta": self.trainer.beta})
        return control


class MetricsCallback(TrainerCallback):
    """Collects every log line; forwards it to ``on_log`` (the Pipes reporter) when given."""

    def __init__(self, on_log: Callable[[dict[str, Any]], None] | None = None):
        self.logs: list[dict[str, Any]] = []
        self.forward = on_log  # not `self.on_log`: that name is the callback hook itself

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            row = {"step": state.global_step, **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}}
            self.logs.append(row)
            if self.forward is not None:
                self.forward(row)
        return control


def resume_point(output_dir: Path) -> str | None:
    """The last intermediate checkpoint of an interrupted run, if any."""
    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
