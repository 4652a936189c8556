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
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from srl_assets.kl_controller import KLController
from srl_assets.reward_normalizer import RewardNormalizer


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
