"""Evaluate a checkpoint on held-out tasks: trajectories (greedy by default) scored by the Verifier."""

from __future__ import annotations

import time

from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import Task
from srl_assets.models.tiny import generate, load_model
from srl_assets.performance.performance_tracker import EvalRecord
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, strip_think


def evaluate_checkpoint(candidate: str, model_path: str, tasks: list[Task], prompts: list[str],
                        verifier: Verifier, max_new_tokens: int = TRAJECTORY_MAX_NEW_TOKENS, batch_size: int = 16,
                        temperature: float = 0.0, seed: int = 0) -> list[EvalRecord]:
    """One record per task. Latency is the batch's wall time shared evenly by its tasks.

    ``temperature`` 0 is greedy decoding (the pass rate the project reports); above 0, one sample per
    task at that temperature (sampled pass@1), seeded by ``seed`` so a rerun gives the same records.
    """
    model, tokenizer = load_model(model_path)
    return evaluate_model(candidate, model, tokenizer, tasks, prompts, verifier, max_new_tokens, batch_size,
                          temperature=temperature, seed=seed)


def evaluate_model(candidate: str, model, tokenizer, tasks: list[Task], prompts: list[str], verifier: Verifier,
                   max_new_tokens: int = TRAJECTORY_MAX_NEW_TOKENS, batch_size: int = 16, temperature: float = 0.0,
                   seed: int = 0) -> list[EvalRecord]:
    """``evaluate_checkpoint`` on a model already in memory (e.g. mid-training, for checkpoint selection)."""
    records: list[EvalRecord] = []
    for start in range(0, len(tasks), batch_size):
        batch_tasks, batch_prompts = tasks[start:start + batch_size], prompts[start:start + batch_size]
        t0 = time.perf_counter()
        # Seeded once, before the first batch: later batches draw on from the same stream.
        outputs = generate(model, tokenizer, batch_prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                           batch_size=batch_size, seed=seed if temperature > 0 and start == 0 else None)
        latency = (time.perf_counter() - t0) / len(batch_tasks)
        for task, text in zip(batch_tasks, outputs, strict=True):
            verdict = verifier.verify_trajectory(task, strip_think(text))
            failed = tuple(s for s in verdict.failed_skills if s in task.skills)
            records.append(EvalRecord(
                candidate=candidate, task_id=task.task_id, skills=task.skills, passed=verdict.passed,
                score=verdict.score, failed_skills=failed, format_ok=verdict.format_ok,
                output_tokens=len(tokenizer(text, add_special_tokens=False)["input_ids"]),
                latency_s=latency, output=text))
    return records
