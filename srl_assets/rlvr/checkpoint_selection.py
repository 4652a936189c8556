"""Best-checkpoint selection on held-out validation tasks, as the SRL paper does (Deng et al., 2025).

GRPO uses it as a Trainer callback; RFT calls ``measure_start`` and ``consider`` after each round.

RL on a small policy is noisy: the verifier reward often dips for a while before it climbs, and the
last step is not the best one. ``BestCheckpointSelector`` is a ``TrainerCallback`` that every
``eval_steps`` optimizer steps greedy-decodes a fixed set of validation tasks (train-split tasks the
policy is not trained on, so the held-out evaluation set stays untouched), scores them with the
Verifier and keeps the weights of the best step (pass rate first, mean score to break ties).

The starting policy is measured too, so the curve shows where training began, but it is never a
candidate: the published RLVR checkpoint is always a trained one.

The best weights live in ``best_dir`` (written atomically: a temp file, then ``os.replace``), with
the validation history in ``best.json``, so a retried op that resumes from an intermediate
checkpoint keeps its best-so-far. Under a multi-process launch only the main process validates,
keeps the best weights and publishes them (the others wait for it at the next step's gather).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import Task
from srl_assets.performance.evaluation import evaluate_model
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.training.processes import is_main_process


@dataclass
class ValidationPoint:
    step: int
    pass_rate: float
    score: float

    def key(self) -> tuple[float, float]:
        return (self.pass_rate, self.score)


class BestCheckpointSelector(TrainerCallback):
    """Validate every ``eval_steps`` steps (and at the last step); keep the best trained weights."""

    def __init__(self, prompts: list[str], tasks: list[Task], verifier: Verifier, tokenizer, eval_steps: int,
                 best_dir: Path, max_new_tokens: int = TRAJECTORY_MAX_NEW_TOKENS, batch_size: int = 32):
        if not prompts or len(prompts) != len(tasks):
            raise ValueError(f"validation needs one prompt per task, got {len(prompts)} prompts "
                             f"for {len(tasks)} tasks")
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}")
        self.prompts, self.tasks, self.verifier, self.tokenizer = prompts, tasks, verifier, tokenizer
        self.eval_steps, self.max_new_tokens, self.batch_size = eval_steps, max_new_tokens, batch_size
        self.best_dir = Path(best_dir)
        self.history: list[ValidationPoint] = []
        self.best: ValidationPoint | None = None
        self._load_record()

    # -- persistence ----------------------------------------------------------------------------

    @property
    def _weights(self) -> Path:
        return self.best_dir / "best.pt"

    @property
    def _record(self) -> Path:
        return self.best_dir / "best.json"

    def _load_record(self) -> None:
        """A resumed run picks up the history and best-so-far of the interrupted one."""
        if not self._record.is_file():
            return
        record = json.loads(self._record.read_text())
        self.history = [ValidationPoint(**p) for p in record["history"]]
        best = record.get("best")
        self.best = ValidationPoint(**best) if best and self._weights.is_file() else None

    def _write_record(self) -> None:
        self.best_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._record.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"history": [asdict(p) for p in self.history],
                                   "best": asdict(self.best) if self.best else None}))
        os.replace(tmp, self._record)

    def _save_weights(self, model) -> None:
        self.best_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._weights.with_suffix(".pt.tmp")
        torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, self._weights)

    # -- validation -----------------------------------------------------------------------------

    def evaluate(self, model, step: int) -> ValidationPoint:
        records = evaluate_model("validation", model, self.tokenizer, self.tasks, self.prompts, self.verifier,
                                 self.max_new_tokens, self.batch_size)
        point = ValidationPoint(step=step, pass_rate=sum(r.passed for r in records) / len(records),
                                score=sum(r.score for r in records) / len(records))
        self.history = [p for p in self.history if p.step != step] + [point]
        return point

    def measure_start(self, model) -> None:
        """Validate the starting policy (step 0) once: shown on the curve, never selected."""
        if is_main_process() and not any(p.step == 0 for p in self.history):
            self.evaluate(model, 0)
            self._write_record()

    def consider(self, model, step: int) -> ValidationPoint:
        """Validate ``model`` at ``step``; keep its weights when it is the best trained step so far."""
        point = self.evaluate(model, step)
        if self.best is None or point.key() > self.best.key():
            self._save_weights(model)
            self.best = point
        self._write_record()
        return point

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # The main process validates and keeps the best weights for all.
        if state.global_step == 0:
            self.measure_start(model)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if is_main_process() and (step % self.eval_steps == 0 or step == state.max_steps):
            self.consider(model, step)
        return control

    def restore_best(self, model) -> ValidationPoint | None:
        """Load the best trained weights into ``model``; returns the chosen point (None: none yet)."""
        if self.best is None:
            return None
        model.load_state_dict(torch.load(self._weights, map_location="cpu"))  # copied onto its device
        return self.best

    def summary(self) -> dict[str, Any]:
        return {"validation_tasks": len(self.tasks), "validation": [asdict(p) for p in self.history],
                "selected_step": self.best.step if self.best else None,
                "selected_pass_rate": self.best.pass_rate if self.best else None}
