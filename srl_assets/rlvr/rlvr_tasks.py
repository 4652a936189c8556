"""Which tasks RLVR trains on and which it validates on.

RLVR needs no expert trajectory, only a task and the Verifier, so its prompts are not limited to
the tasks the teacher solved: the stored train tasks come first, topped up with fresh train-split
tasks from the DynamicExampleGenerator. Validation tasks (best-checkpoint selection) are fresh
train-split tasks outside the training prompts; the held-out evaluation tasks (the ``eval`` split)
are never touched, by construction of the hash split.
"""

from __future__ import annotations

from srl_assets.dynamic_example_generator import DynamicExampleGenerator, Task


def rlvr_tasks(stored: list[Task], generator: DynamicExampleGenerator, n_tasks: int, n_validation: int,
               seed: int) -> tuple[list[Task], list[Task]]:
    """``(training tasks, validation tasks)``: disjoint, both of the train split, reproducible from ``seed``."""
    if n_tasks < 1 or n_validation < 0:
        raise ValueError(f"n_tasks must be >= 1 and n_validation >= 0, got {n_tasks} and {n_validation}")
    wrong = [t.task_id for t in stored if t.split != "train"]
    if wrong:
        raise ValueError(f"RLVR trains on train-split tasks only; got eval tasks {wrong[:3]}")
    stored = sorted(stored, key=lambda t: t.task_id)[:n_tasks]
    known = {t.task_id for t in stored}
    need = n_validation + n_tasks - len(stored)
    fresh = [t for t in generator.generate(need + len(known), "train", seed) if t.task_id not in known][:need]
    if len(fresh) < need:
        raise ValueError(f"{generator.domain.name}: only {len(fresh)} fresh train tasks for the {need} "
                         "RLVR needs (n_tasks + n_validation_tasks); lower them")
    return stored + fresh[n_validation:], fresh[:n_validation]
