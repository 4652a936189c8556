"""What the SRL and RLVR GRPO runs share: TRL's ``GRPOTrainer`` plus what TRL 1.16 lacks.

* Reward normalization by the project's RewardNormalizer: the reward function returns normalized
  rewards and TRL is told ``scale_rewards="none"``, so TRL only subtracts the group mean. For
  ``group`` this is exactly GRPO's (r - mean_g) / std_g; for ``batch`` and ``running`` the
  advantage is (r - mean_g) / std_batch or std_running.
* An adaptive KL coefficient (Ziegler et al. 2019): a callback feeds the KL TRL measured at each
  step to the KLController and writes the new coefficient into ``trainer.beta``, the attribute
  GRPO's loss reads (``per_token_loss + self.beta * per_token_kl``). The coefficient and its
  history are saved in every checkpoint's ``trainer_state.json`` and restored on resume.
* Resumable runs: intermediate checkpoints every ``save_steps`` under the work folder; a rerun
  resumes from the last complete one.
* Faster rollouts: ``FastRolloutGRPOTrainer`` samples with the project's lean sampler
  (``srl_assets.models.sampler``) where it reproduces TRL's own HF ``generate`` path, else TRL's path.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import GRPOTrainer

from srl_assets.kl_controller import KLController
from srl_assets.models.sampler import SAMPLERS, generation_config_reason, pick_sampler, sample_ids
from srl_assets.reward_normalizer import RewardNormalizer
from srl_assets.training.checkpoint_folders import numbered_checkpoints


class NormalizedReward:
    """Wraps a raw reward function: returns normalized rewards, keeps raw ones and the stats."""

    def __init__(self, raw_fn: Callable[..., list[float]], normalizer: RewardNormalizer, group_size: int,
                 name: str):
        self.raw_fn = raw_fn
        self.normalizer = normalizer
        self.group_size = group_size
        self.__name__ = name
        self.raw_history: list[float] = []  # mean raw reward of each call (one call per step)
        self.format_history: list[float] = []  # format violation rate of each call

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        raw = self.raw_fn(prompts, completions, **kwargs)
        normalized = self.normalizer.normalize(raw, self.group_size)
        self.raw_history.append(statistics.fmean(raw))
        # The verifier reward says which completions failed its format/schema check; the step
        # reward marks a malformed step with -1.
        violations = getattr(self.raw_fn, "last_format_violations", None)
        if violations is None or len(violations) != len(raw):
            violations = [r == -1.0 for r in raw]
        self.format_history.append(sum(violations) / len(raw))
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("raw_reward_mean", statistics.fmean(raw))
            log_metric("format_violation_rate", self.format_history[-1])
        return normalized


logger = logging.getLogger(__name__)


class AdaptiveKLCallback(TrainerCallback, ExportableState):
    """After each optimizer step, feed TRL's measured KL to the controller and set ``trainer.beta``.

    Checkpoints carry the controller's state and the history: as an ``ExportableState``, ``state()``
    is written into ``trainer_state.json`` (under ``stateful_callbacks``) by every checkpoint save.
    On resume ``on_train_begin`` reads it back from the loaded TrainerState and sets the controller
    and ``trainer.beta`` before the first step. The callback restores itself, so it does not need
    (and is not rebuilt by) ``restore_callback_states_from_checkpoint``; keep that option off, its
    default: it would replace this instance by one built from ``state()["args"]``, which cannot
    hold the controller or the trainer.
    """

    def __init__(self, controller: KLController, samples_per_step: int):
        self.controller = controller
        self.samples_per_step = samples_per_step
        self.trainer = None
        self.history: list[dict[str, float]] = []

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the controller's state (its current value) and the history."""
        return {"args": {}, "attributes": {"controller": self.controller.state_dict(),
                                           "history": [dict(h) for h in self.history]}}

    def on_train_begin(self, args, state, control, **kwargs):
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name)
        if state.global_step > 0:  # resumed from a checkpoint: the TrainerState was loaded from it
            if isinstance(saved, dict) and "controller" in saved.get("attributes", {}):
                self.controller.load_state_dict(saved["attributes"]["controller"])
                self.history = [dict(h) for h in saved["attributes"].get("history", [])]
            else:
                logger.warning("checkpoint at step %d has no saved KL controller state: the KL "
                               "coefficient restarts from %s", state.global_step, self.controller.value)
        # A checkpoint written before this callback was stateful lacks the entry, and the Trainer's
        # save indexes it by name: put it (the current state) back in.
        state.stateful_callbacks[name] = self.state()
        if self.trainer is not None:
            self.trainer.beta = self.controller.value
        return control

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


def _trainer_state_readable(path: Path) -> bool:
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def resume_point(output_dir: Path) -> str | None:
    """The last complete intermediate checkpoint of an interrupted Trainer run, if any.

    The Trainer writes ``checkpoint-<step>/`` in place and ``trainer_state.json`` last, so a run
    killed while saving leaves a folder without it (or with it cut short): such a folder does not
    count, and the run resumes from the checkpoint before it.
    """
    found = numbered_checkpoints(output_dir, _trainer_state_readable)
    return str(found[-1][1]) if found else None


class FastRolloutGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` whose rollouts come from the lean sampler (``srl_assets.models.sampler``).

    TRL 1.16 samples with HF ``generate`` in ``_generate_single_turn``; at the tiny default's size
    that is mostly per-step Python overhead (``benchmarks/rollout_throughput.py``). This override
    draws from the same distribution (temperature, nucleus ``top_p``, every EOS id TRL stops at) on
    torch's global RNG, as TRL's path does, and returns what TRL's path returns: each completion's
    token ids up to and including its first EOS, and no logprobs. It hands over to TRL's own path
    (``fallback_reason`` says why) for vLLM or continuous batching, multimodal prompts, sharded
    weights (DeepSpeed, FSDP), a generation setting the sampler lacks (top-k, min-p, repetition
    penalty, ...), or a model ``pick_sampler`` leaves to HF generate ($SRL_SAMPLER=hf, a big or
    non-Llama model).
    """

    last_rollout_path: str | None = None  # "fast" or "trl": which path sampled the last rollouts

    def fallback_reason(self, model, images=None, multimodal_fields=None, has_tool_images=False) -> str | None:
        """Why TRL's own generation path samples these rollouts (None: the lean sampler does)."""
        from accelerate.utils import DistributedType

        if self.use_vllm or self.use_transformers_continuous_batching:
            return "TRL's vLLM / continuous-batching generation is configured"
        if images or multimodal_fields or has_tool_images:
            return "multimodal prompts"
        if self.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            return f"{self.accelerator.distributed_type} shards the weights"
        gen = self.generation_config
        if gen.top_k not in (0, None):
            return f"top_k = {gen.top_k}"
        if (gen.num_return_sequences or 1) != 1:
            return f"num_return_sequences = {gen.num_return_sequences}"
        reason = generation_config_reason(gen)
        if reason:
            return reason
        if pick_sampler(model) is not SAMPLERS.get("fast"):
            return "pick_sampler chose HF generate for this model ($SRL_SAMPLER or its size/architecture)"
        return None

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        model = self.accelerator.unwrap_model(self.model)
        reason = self.fallback_reason(model, images, multimodal_fields, has_tool_images)
        if reason:
            if self.last_rollout_path != "trl":
                logger.info("GRPO rollouts use TRL's generation path: %s", reason)
            self.last_rollout_path = "trl"
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        self.last_rollout_path = "fast"
        device, pad = self.accelerator.device, self._tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompt_ids], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        gen = self.generation_config
        completion_ids = sample_ids(model, ids, mask, max_new_tokens=gen.max_new_tokens,
                                    eos_token_id=list(self.eos_token_ids),
                                    temperature=gen.temperature if gen.do_sample else 0.0,
                                    top_p=1.0 if gen.top_p is None else gen.top_p)
        return completion_ids, None  # TRL's HF path returns no logprobs either
