"""TrainingResource: where training children keep their work, and how they are launched."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field


class TrainingResource(dg.ConfigurableResource):
    work_root: str = Field(description="Intermediate checkpoints and staging (kept across op retries).")
    policy_lore_k: int = Field(default=0, description="Retrieved lore passages shown in the policy's prompts "
                               "(SFT, SRL, RLVR, evaluation). 0 for the embedded tiny model, which learns the "
                               "rules faster without them in 20 CPU minutes; 2 for a real model (see configs/).")
    accelerate_when_multi_gpu: bool = Field(default=True, description="Start the child with "
                                            "`accelerate launch` when more than one GPU is visible (the stages "
                                            "TRL splits across processes: base SFT, SRL, RLVR GRPO/DPO).")

    def work_dir(self, stage: str, model_type: str, identity: dict[str, Any]) -> Path:
        """Stable per (stage, partition, inputs, config): a retried op finds its own checkpoints."""
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return Path(self.work_root) / stage / model_type / digest

    def command(self, stage: str, config: dict[str, Any] | None = None) -> list[str]:
        """The child's command line: under ``accelerate launch`` (one process per GPU) when more than
        one GPU is visible and the stage's trainer splits across processes (see
        ``srl_assets.training.processes``); a single process otherwise."""
        from srl_assets.training.processes import splits_across_processes

        child = ["-m", "srl_assets.training.child"]
        gpus = self._visible_gpus()
        if self.accelerate_when_multi_gpu and gpus > 1 and splits_across_processes(stage, config):
            return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                    *child]
        return [sys.executable, *child]

    @staticmethod
    def _visible_gpus() -> int:
        import torch

        return torch.cuda.device_count()

    @staticmethod
    def clean(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
