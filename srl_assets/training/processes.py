"""Training across several processes (``accelerate launch --multi_gpu`` on a multi-GPU machine).

The launcher starts one copy of the training child per device and tells each its place through the
``RANK`` and ``WORLD_SIZE`` environment variables (torch.distributed's convention, which accelerate
follows). TRL's trainers then split every batch across the processes and average the gradients; the
project's own code around them must do two more things:

* write once: only the main process (rank 0) saves the published model, the validation record and
  the summary, so N processes never race on one folder;
* keep a step the same size: ``prompts_per_step``, the SFT and DPO ``batch_size`` are totals per
  optimizer step, divided here among the processes (a config means the same on 1 GPU or 8).

What is per process: the RewardNormalizer's ``batch`` and ``running`` statistics and the raw reward
curve in the summary cover the main process's share of each step's rollouts (TRL's logged
``reward`` and ``kl`` are gathered over all of them); ``group`` normalization is exact, since every
process rolls out whole groups. DPO samples and ranks its preference pairs in every process (with
the same seed); its training on them is what splits.

Stages that TRL does not split (the step rollouts, SRL's own step-wise GRPO, evaluation, the project's own PPO, and RFT, whose
sampling would be repeated in every process) run in one process: ``TrainingResource`` launches them without accelerate, and ``run_stage`` refuses them under
a multi-process launcher rather than run the same work N times.
"""

from __future__ import annotations

import os
from typing import Any

# The stages whose training a TRL trainer (SFTTrainer, GRPOTrainer, DPOTrainer) splits across processes.
# SRL's step-wise GRPO is the project's own loop (srl_assets/srl/step_grpo.py): one process.
_SPLIT_STAGES = {"base"}
_SPLIT_RLVR_ALGORITHMS = {"grpo", "dpo"}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def splits_across_processes(stage: str, config: dict[str, Any] | None = None) -> bool:
    """Whether ``stage`` (with its config) can use several training processes."""
    if stage == "rlvr":
        return (config or {}).get("algorithm", "grpo") in _SPLIT_RLVR_ALGORITHMS
    return stage in _SPLIT_STAGES


def require_splittable(stage: str, config: dict[str, Any] | None = None) -> None:
    """Refuse a stage that would only repeat its work in every process of a multi-process launch."""
    processes = world_size()
    if processes > 1 and not splits_across_processes(stage, config):
        what = f"rlvr with algorithm {(config or {}).get('algorithm')!r}" if stage == "rlvr" else f"the {stage} stage"
        raise ValueError(f"{what} runs in one process, but this child is one of WORLD_SIZE={processes}: "
                         "launch it without accelerate/torchrun (TrainingResource does so)")


def per_process(total: int, field: str, processes: int | None = None) -> int:
    """``total`` (a per-step count named ``field`` in the config) divided among the processes."""
    processes = processes or world_size()
    if total % processes:
        raise ValueError(f"{field} ({total}) must be divisible by the {processes} training processes, "
                         f"so that every process gets the same share of a step")
    return total // processes
