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
                                            "`accelerate launch` when more than one GPU is visible.")

    def work_dir(self, stage: str, model_type: str, identity: dict[str, Any]) -> Path:
        """Stable per (stage, partition, inputs, config): a retried op finds its own checkpoints."""
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return Path(self.work_root) / stage / model_type / digest

    def command(self) -> list[str]:
        import torch

        gpus = torch.cuda.device_count()
        if self.accelerate_when_multi_gpu and gpus > 1:
            return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
                    "-m", "srl_assets.training.child"]
        return [sys.executable, "-m", "srl_assets.training.child"]

    @staticmethod
    def clean(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
