"""The trainers' config dataclasses, in a module without torch or TRL imports, so the Dagster asset
modules that expose them as run config stay quick to import (every run process loads them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from srl_assets.kl_controller import KLController, kl_controller_names, make_kl_controller
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.reward_normalizer import normalizer_names


@dataclass
class GRPOStageConfig:
    """Hyperparameters of one GRPO stage (SRL or RLVR). Defaults fit the tiny CPU model."""

    max_steps: int = field(default=20, metadata={"help": "Optimizer steps. The paper trains up to 30 epochs at 7B."})
    learning_rate: float = field(default=2e-4, metadata={"help": "The paper uses 5e-7 at 7B; a 2M-parameter model "
                                                                   "trained from scratch needs far more."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps with a linear learning-rate "
                                                               "warmup: Adam's first updates are ~lr * sign(grad) "
                                                               "whatever the gradient's size, which noisy RL "
                                                               "gradients turn into a random jolt."})
    prompts_per_step: int = field(default=4, metadata={"help": "Distinct prompts per step, over all training "
                                                               "processes (paper: 512 SRL, 128 GRPO)."})
    num_generations: int = field(default=4, metadata={"help": "Rollouts per prompt (paper: 8)."})
    max_completion_length: int = field(default=96, metadata={"help": "Tokens a rollout may write."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of rollouts (paper: 1.0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of rollouts (1.0 = the full distribution)."})
    micro_batch_size: int = field(default=0, metadata={"help": "Rollouts per forward/backward pass (in each "
                                                               "training process); the step's "
                                                               "prompts_per_step * num_generations rollouts are "
                                                               "generated at once and their gradients accumulated "
                                                               "over micro-batches of this size (0 = one pass): "
                                                               "the same update in less memory (a real model's "
                                                               "logits). No faster on the tiny CPU default."})
    num_iterations: int = field(default=1, metadata={"help": "Optimizer steps per batch of rollouts (GRPO's mu; "
                                                             "> 1 reuses samples with PPO's clipped ratio)."})
    beta: float = field(default=0.0, metadata={"help": "Initial KL coefficient (paper: 0). Must be > 0 for 'adaptive'."})
    kl_controller: str = field(default="fixed", metadata={"help": "'fixed' or 'adaptive' (Ziegler et al. 2019)."})
    kl_target: float = field(default=0.05, metadata={"help": "Adaptive KL: target per-token KL."})
    kl_horizon: float = field(default=100.0, metadata={"help": "Adaptive KL: horizon in samples."})
    normalizer: str = field(default="group", metadata={"help": "RewardNormalizer: group | batch | running | none."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip (paper: 1.0)."})
    save_steps: int = field(default=10, metadata={"help": "Intermediate checkpoint interval (for resume)."})
    eval_steps: int = field(default=0, metadata={"help": "RLVR only: every eval_steps steps, greedy-decode the "
                                                          "validation tasks and publish the best step's weights "
                                                          "(the paper's checkpoint selection); 0 = the last step."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and data order."})
    use_vllm: bool = field(default=False, metadata={"help": (
        "RLVR GRPO only: sample rollouts with TRL's vLLM integration (its 'colocate' mode, in the training "
        "process) for a real model on a GPU preset; needs a CUDA device and the vllm package. Not tested "
        "here (no GPU, no vllm). Off: the project's lean sampler for Llama-shaped models, else HF generate.")})

    def __post_init__(self) -> None:
        if self.eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0, got {self.eval_steps}")
        for name in ("max_steps", "prompts_per_step", "save_steps", "max_completion_length", "num_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        rollouts = self.rollouts_per_step
        if self.micro_batch_size < 0 or (self.micro_batch_size and rollouts % self.micro_batch_size):
            raise ValueError(f"micro_batch_size must be 0 or divide prompts_per_step * num_generations "
                             f"({rollouts}), got {self.micro_batch_size}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares rollouts), got {self.num_generations}")
        if self.normalizer not in normalizer_names():
            raise ValueError(f"normalizer {self.normalizer!r} unknown; known: {normalizer_names()}")
        if self.kl_controller == "adaptive" and self.beta <= 0:
            raise ValueError("kl_controller 'adaptive' needs beta > 0 (a reference model)")
        if self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError("learning_rate and temperature must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        make_kl_controller(self.kl_controller, self.beta or 1.0, self.kl_target, self.kl_horizon)

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GRPOStageConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown GRPO config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def make_kl_controller(self) -> KLController:
        return make_kl_controller(self.kl_controller, self.beta, self.kl_target, self.kl_horizon)

    def trl_config(self, output_dir: Path, report_to: list[str], run_name: str):
        """TRL's ``GRPOConfig`` for this stage (imported here: the asset modules stay light)."""
        import torch
        from trl import GRPOConfig

        from srl_assets.models.tiny import pick_device
        from srl_assets.training.processes import per_process

        device, dtype = pick_device()
        if self.use_vllm and device != "cuda":
            raise ValueError(f"GRPO use_vllm is set but the device is {device!r}: TRL's vLLM rollouts need "
                             "a CUDA GPU; set use_vllm false (the lean sampler or HF generate samples instead)")
        # Under several processes each rolls out whole groups of its share of the step's prompts;
        # TRL gathers the rewards of all of them before it centres each group.
        rollouts = per_process(self.prompts_per_step, "prompts_per_step") * self.num_generations
        micro = self.micro_batch_size or rollouts
        if rollouts % micro:
            raise ValueError(f"micro_batch_size ({micro}) must divide each training process's "
                             f"{rollouts} rollouts per step")
        return GRPOConfig(
            output_dir=str(output_dir), run_name=run_name,
            max_steps=self.max_steps, learning_rate=self.learning_rate,
            warmup_steps=round(self.warmup_ratio * self.max_steps),
            per_device_train_batch_size=micro, gradient_accumulation_steps=rollouts // micro,
            num_generations=self.num_generations, max_completion_length=self.max_completion_length,
            temperature=self.temperature, top_k=0, top_p=self.top_p, num_iterations=self.num_iterations,
            use_vllm=self.use_vllm,
            beta=self.beta, scale_rewards="none",  # the RewardNormalizer scales (see module docstring)
            max_grad_norm=self.max_grad_norm, seed=self.seed, data_seed=self.seed,
            use_cpu=device == "cpu", bf16=dtype == torch.bfloat16,
            activation_checkpointing=False,
            save_strategy="steps", save_steps=self.save_steps, save_total_limit=2,
            logging_steps=1, report_to=report_to, disable_tqdm=True, dataloader_num_workers=0,
            ddp_find_unused_parameters=False,  # every weight of a causal LM takes part in the loss
        )


SRL_UPDATES = ("grpo", "rft")  # StepSRLConfig.update


@dataclass
class StepSRLConfig:
    """Hyperparameters of SRL's step-wise GRPO (``srl_assets.srl.step_grpo``). Defaults fit the tiny CPU model."""

    max_steps: int = field(default=40, metadata={"help": "Optimizer steps (paper: up to 30 epochs at 7B)."})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (paper: 5e-7 at 7B; the "
                                                                   "0.14M-parameter tiny default needs far more)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps with a linear warmup."})
    prompts_per_step: int = field(default=16, metadata={"help": "Step instances per optimizer step (paper: 512)."})
    num_generations: int = field(default=8, metadata={"help": "Rollouts per step instance (paper: 8)."})
    max_completion_length: int = field(default=160, metadata={"help": "Tokens a rollout may write before its "
                                                                        "line break (a final JSON spec is the longest step)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature (paper: 1.0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of rollouts (1.0 = the full distribution)."})
    reward: str = field(default="field", metadata={"help": "Registered step reward (srl_assets.srl.step_reward."
                                                           "STEP_REWARDS): 'difflib' is the paper's 2M/T; 'field' "
                                                           "(default) separates a wrong value from a right one "
                                                           "(docs/step_rewards.md)."})
    normalizer: str = field(default="group", metadata={"help": "RewardNormalizer: group | batch | running | none."})
    expert_samples: int = field(default=0, metadata={"help": "How many of each group's num_generations are the "
                                                          "expert's own step instead of a rollout (off-policy "
                                                          "guidance, LUFFY: Yan et al. 2025, arXiv 2504.14945): "
                                                          "0 is the paper's on-policy SRL (docs/experiments.md)."})
    dynamic_sampling_eps: float = field(default=1e-3, metadata={"help": "Groups whose reward std is at most this "
                                                                          "carry no signal and are left out of the loss."})
    update: str = field(default="grpo", metadata={"help": (
        "How the step rewards move the policy. 'grpo': a policy-gradient step on group-normalized rewards (the "
        "paper's). 'rft': rejection sampling at the step level, as RLVR's RFT does for whole trajectories: a "
        "plain negative log-likelihood step on the group members whose step reward is at least keep_reward "
        "(the expert's own steps, with expert_samples > 0, and the rollouts that match them); normalizer, "
        "negative_weight and dynamic sampling do not apply.")})
    keep_reward: float = field(default=1.0, metadata={"help": "update 'rft': the step reward a member needs to "
                                                              "be trained on (1.0: an exact match of the expert's "
                                                              "step)."})
    negative_weight: float = field(default=1.0, metadata={"help": "Weight of below-average rollouts' (negative) "
                                                                     "advantages: 1.0 is GRPO; 0 reinforces only the "
                                                                     "rollouts that beat their group."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the start (paper: 0)."})
    kl_controller: str = field(default="fixed", metadata={"help": "'fixed' or 'adaptive' (Ziegler et al. 2019)."})
    kl_target: float = field(default=0.05, metadata={"help": "Adaptive KL: target per-token KL."})
    kl_horizon: float = field(default=100.0, metadata={"help": "Adaptive KL: horizon in samples."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip (paper: 1.0)."})
    micro_batch_size: int = field(default=0, metadata={"help": "Rollouts per forward/backward pass (0 = all of a "
                                                               "step's at once); the same update in less memory."})
    rollout_batch_size: int = field(default=128, metadata={"help": "Rollouts decoded at once."})
    save_steps: int = field(default=10, metadata={"help": "Intermediate checkpoint interval (for resume)."})
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "prompts_per_step", "max_completion_length", "rollout_batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"StepSRLConfig.{name} must be an integer >= 1, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(f"StepSRLConfig.num_generations must be >= 2 (GRPO compares rollouts), "
                             f"got {self.num_generations}")
        if self.micro_batch_size < 0 or self.save_steps < 0:
            raise ValueError("StepSRLConfig.micro_batch_size and save_steps must be >= 0")
        if not (isinstance(self.expert_samples, int) and 0 <= self.expert_samples < self.num_generations):
            raise ValueError(f"StepSRLConfig.expert_samples must be an integer in [0, num_generations - 1] "
                             f"(a group needs at least one rollout), got {self.expert_samples!r}")
        if self.update not in SRL_UPDATES:
            raise ValueError(f"StepSRLConfig.update {self.update!r} unknown; known: {list(SRL_UPDATES)}")
        if self.update == "rft" and not (math.isfinite(self.keep_reward) and 0 < self.keep_reward <= 1):
            raise ValueError(f"StepSRLConfig.keep_reward must be in (0, 1] (step rewards top out at 1), "
                             f"got {self.keep_reward}")
        if not 0.0 <= self.negative_weight <= 1.0:
            raise ValueError(f"StepSRLConfig.negative_weight must be in [0, 1], got {self.negative_weight}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0) or not self.temperature > 0:
            raise ValueError("StepSRLConfig.learning_rate and temperature must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"StepSRLConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"StepSRLConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.normalizer not in normalizer_names():
            raise ValueError(f"StepSRLConfig.normalizer {self.normalizer!r} unknown; known: {normalizer_names()}")
        if self.kl_controller == "adaptive" and self.beta <= 0:
            raise ValueError("StepSRLConfig.kl_controller 'adaptive' needs beta > 0 (a reference model)")
        make_kl_controller(self.kl_controller, self.beta or 1.0, self.kl_target, self.kl_horizon)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "StepSRLConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown SRL config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def make_kl_controller(self) -> KLController:
        return make_kl_controller(self.kl_controller, self.beta, self.kl_target, self.kl_horizon)


# The pipeline's SRL stage (srl_assets/assets/training.py, SRLStageConfig / SRLConfig); the recipe comparison
# runs the same SRL (srl_assets/training/recipes.py, SRL_RECIPE_DEFAULTS), its steps set by its budget.
# - update 'rft': a likelihood step on the group members whose `field` step reward reaches 1.0 (the expert's
#   steps and the rollouts that match them) instead of GRPO's policy gradient, on 48 step instances x 4 members
#   (2 the expert's) at 3e-4, 60 steps. From the seven bases of a clean-clone demo (c69fb1f), 200 held-out tasks
#   per type (benchmarks/srl_budget.py): SRL above its base in 6 of 7 (mean +0.044, personality and plant with
#   p < 0.002), where GRPO on 16 x 8 at 1e-4 for 20 steps (the stage until 2026-12-03) moved no type by more than
#   0.035 (mean +0.002) and 20 of the new steps by -0.07 to +0.055; the pipeline's RLVR after it ended above RLVR
#   after the old stage in 6 of 7 and above RLVR from the base in 7 of 7 (mean 0.614 against 0.555 and 0.546), for
#   about 22 s more per type. On the next demo's bases (74e7417): SRL above its base in 5 of 7 (old stage 4) but
#   building -0.125; RLVR after it 0.640 against 0.594 and 0.584, again above RLVR from the base in 7 of 7
#   (docs/experiments.md, "An SRL stage that shows its effect").
# - expert_samples 2 of each group's members are the expert's step: from `make compare`'s starts, SRL-only moved
#   from above the start in 0 of 7 types to 3 of 7 (docs/experiments.md, "Expert steps in SRL's groups").
# - temperature 0.7 and the `field` step reward: measured on plant from a 600-step start (README, Recipe
#   comparison): lr 1e-4 at T 0.7 with `field` 0.075 -> 0.095, `difflib` 0.085; T 1.0 lr 3e-4 0.03.
SRL_DEFAULTS: dict[str, Any] = {"update": "rft", "prompts_per_step": 48, "num_generations": 4, "expert_samples": 2,
                                "learning_rate": 3e-4, "max_steps": 60, "temperature": 0.7, "reward": "field"}


@dataclass
class DPOStageConfig:
    max_steps: int = field(default=20, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate."})
    beta: float = field(default=0.1, metadata={"help": "DPO temperature: how far from the reference."})
    samples_per_prompt: int = field(default=4, metadata={"help": "Policy samples ranked per prompt."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per step."})
    max_new_tokens: int = field(default=256, metadata={"help": "Sample length."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    min_margin: float = field(default=0.0, metadata={"help": "Minimum verifier-score gap for a pair."})
    save_steps: int = field(default=10, metadata={"help": "Intermediate checkpoint interval."})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 to rank, got {self.samples_per_prompt}")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("max_steps and batch_size must be >= 1")


@dataclass
class RFTConfig:
    """Rejection-sampling fine-tuning (expert iteration) with the Verifier as the reward.

    Each round samples ``samples_per_prompt`` trajectories for ``prompts_per_round`` training tasks,
    keeps for every task one sample whose verifier score reaches ``min_score``, and fine-tunes the
    policy on the kept samples (ReST-EM, Singh et al. 2023; RFT, Yuan et al. 2023; STaR, Zelikman et
    al. 2022): the policy-gradient objective of a binary verifiable reward, restricted to its positive
    samples, so every update is a likelihood step on a verified trajectory.
    """

    rounds: int = field(default=1, metadata={"help": "Sample -> filter -> fine-tune rounds; each round "
                                                       "samples from the policy the previous one trained."})
    prompts_per_round: int = field(default=400, metadata={"help": "Training tasks sampled per round (fresh "
                                                                    "tasks first). More tasks give more, and "
                                                                    "more varied, verified trajectories."})
    samples_per_prompt: int = field(default=4, metadata={"help": "Trajectories sampled per task; a task "
                                                                   "contributes when any of them passes."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (the tiny default loses the "
                                                                "format on many samples at 1.0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (1.0 = the full distribution)."})
    max_new_tokens: int = field(default=TRAJECTORY_MAX_NEW_TOKENS, metadata={"help": "Tokens a sampled trajectory "
                                                                                   "may write."})
    min_score: float = field(default=1.0, metadata={"help": "A sample is kept when its verifier score is at "
                                                              "least this (1.0 = it passes every constraint); "
                                                              "the best such sample of each task is kept."})
    sft_steps: int = field(default=150, metadata={"help": "Fine-tuning steps per round on the kept samples "
                                                            "(cosine schedule). On the tiny default 60 steps "
                                                            "(about two passes over the samples) gave no gain "
                                                            "on plant, 150 did."})
    max_epochs: float = field(default=10.0, metadata={"help": "Cap on passes over a round's kept samples: a "
                                                              "round keeping few fine-tunes for fewer steps "
                                                              "than sft_steps (on the tiny default, 150 steps "
                                                              "on 22 kept samples cost building 0.07 -> 0.01)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning peak learning rate (the tiny "
                                                                   "default's warm start uses 3e-3; ~1e-5 for a "
                                                                   "pretrained model)."})
    batch_size: int = field(default=8, metadata={"help": "Kept samples per fine-tuning step."})
    generation_batch_size: int = field(default=64, metadata={"help": "Trajectories decoded at once."})
    save_steps: int = field(default=50, metadata={"help": "Intermediate fine-tuning checkpoint interval "
                                                            "(a retried op resumes from the last one)."})
    seed: int = field(default=0, metadata={"help": "Seed of task order, sampling and fine-tuning."})

    empty_round: str = field(default="error", metadata={"help": "A round none of whose samples passes: 'error' "
                                                                  "stops the run (the policy cannot use RFT yet), "
                                                                  "'skip' leaves the policy as it is (the recipe "
                                                                  "comparison: RLVR with no signal learns nothing)."})

    def round_steps(self, kept: int) -> int:
        """Fine-tuning steps of a round that kept ``kept`` samples: sft_steps, at most max_epochs passes.

        >>> RFTConfig(sft_steps=150, max_epochs=10, batch_size=8).round_steps(22)
        28
        """
        return max(1, min(self.sft_steps, math.ceil(self.max_epochs * kept / self.batch_size)))

    def __post_init__(self) -> None:
        for name in ("rounds", "prompts_per_round", "sft_steps", "batch_size", "generation_batch_size",
                     "max_new_tokens", "save_steps"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"RFTConfig.{name} must be an integer >= 1, got {value!r}")
        if self.samples_per_prompt < 1:
            raise ValueError(f"RFTConfig.samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        if not (math.isfinite(self.max_epochs) and self.max_epochs > 0):
            raise ValueError(f"RFTConfig.max_epochs must be a finite number > 0, got {self.max_epochs}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"RFTConfig.min_score must be in [0, 1] (a verifier score), got {self.min_score}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0) or not self.temperature > 0:
            raise ValueError("RFTConfig.learning_rate and temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"RFTConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.empty_round not in ("error", "skip"):
            raise ValueError(f"RFTConfig.empty_round must be 'error' or 'skip', got {self.empty_round!r}")


@dataclass
class PPOConfig:
    """Hyperparameters of `PPOTrainer`; every field is checked in `__post_init__`."""

    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "AdamW learning rate for the policy and the value head."},
    )
    num_steps: int = field(
        default=100, metadata={"help": "Training steps; each samples one batch of prompts."}
    )
    batch_size: int = field(
        default=8,
        metadata={"help": "Prompts per step, one completion each. Larger: less noisy advantages."},
    )
    ppo_epochs: int = field(
        default=4,
        metadata={
            "help": "Updates on each batch. More reuses samples better but drifts off-policy; "
            "the clipping (clip_eps) bounds the drift."
        },
    )
    clip_eps: float = field(
        default=0.2,
        metadata={"help": "PPO ratio clip ε (Schulman et al., 2017): ratio kept in [1-ε, 1+ε]."},
    )
    clip_value: float = field(
        default=0.2,
        metadata={"help": "How far the value head may move from the rollout's values per batch."},
    )
    vf_coef: float = field(
        default=0.1, metadata={"help": "Weight of the value loss in the total loss."}
    )
    ent_coef: float = field(
        default=0.0,
        metadata={"help": "Weight of the entropy bonus; > 0 keeps sampling diverse for longer."},
    )
    gamma: float = field(
        default=1.0,
        metadata={"help": "Discount. 1.0: a completion is one episode, its score not decayed."},
    )
    lam: float = field(
        default=0.95,
        metadata={"help": "GAE λ: lower is less variance, more bias from the value head."},
    )
    max_new_tokens: int = field(
        default=64, metadata={"help": "Upper bound on the length of each sampled completion."}
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature; log-probabilities use the same one, so PPO's ratios "
            "are those of the distribution actually sampled."
        },
    )
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "Initial coefficient of the per-token KL penalty against the reference model "
            "(the SRL paper uses 0; adaptive control needs > 0)."
        },
    )
    kl_controller: str = field(
        default="fixed",
        metadata={"help": "'fixed' (constant coefficient) or 'adaptive' (Ziegler et al., 2019)."},
    )
    kl_target: float = field(
        default=6.0,
        metadata={"help": "Adaptive control: target KL per completion in nats (token sum)."},
    )
    kl_horizon: float = field(
        default=10_000.0,
        metadata={"help": "Adaptive control: samples over which the coefficient adapts."},
    )
    seed: int = field(default=0, metadata={"help": "Seeds prompt sampling and generation."})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient-norm clip, as in the SRL paper."}
    )
    save_steps: int = field(
        default=10,
        metadata={
            "help": "Steps between intermediate checkpoints (and one after the last step); a "
            "rerun resumes from the latest. Only when `train` gets a checkpoint folder."
        },
    )

    def __post_init__(self) -> None:
        positive = ["learning_rate", "clip_eps", "clip_value", "temperature", "max_grad_norm"]
        positive += ["kl_target", "kl_horizon"]
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PPOConfig.{name} must be a finite number > 0, got {value}")
        for name in ["num_steps", "batch_size", "ppo_epochs", "max_new_tokens", "save_steps"]:
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"PPOConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ["vf_coef", "ent_coef", "kl_coef"]:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PPOConfig.{name} must be a finite number >= 0, got {value}")
        for name in ["gamma", "lam"]:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PPOConfig.{name} must be in [0, 1], got {value}")
        if self.kl_controller not in kl_controller_names():
            raise ValueError(
                f"PPOConfig.kl_controller must be one of {kl_controller_names()}, "
                f"got {self.kl_controller!r}"
            )
        if self.kl_controller == "adaptive" and self.kl_coef <= 0:
            raise ValueError(
                f"PPOConfig.kl_coef must be > 0 with kl_controller='adaptive', got {self.kl_coef}"
            )
