"""The RLVR outcome reward: the Verifier's score on the final spec of the trajectory a model writes."""

from __future__ import annotations

import json
from typing import Any

from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import Task
from srl_assets.prompts import strip_think
from srl_assets.srl.step_reward import completion_text


def task_column(task: Task) -> str:
    """How a task travels in a dataset column (TRL passes columns to reward functions)."""
    return json.dumps(task.to_row())


def parse_task_column(value: Any) -> Task:
    return Task.from_row(json.loads(value) if isinstance(value, str) else value)


def make_verifier_reward_fn(verifier: Verifier):
    """``fn(prompts, completions, task=[...]) -> scores in [0, 1]``; reads the ``task`` column.
    ``fn.last_format_violations`` holds, for the last call, whether each completion failed the
    Verifier's format or schema check (a score alone cannot tell: both score 0 like a wrong value).

    >>> # fn(["Task: ..."], ["1. **Plan** ...\\n2. **Final spec** {...}"], task=[task_json]) -> [1.0]
    """

    def verifier_reward(prompts, completions, task, **kwargs) -> list[float]:
        verdicts = [verifier.verify_trajectory(parse_task_column(t), strip_think(completion_text(c)))
                    for c, t in zip(completions, task, strict=True)]
        verifier_reward.last_format_violations = [not v.format_ok for v in verdicts]
        return [v.score for v in verdicts]

    verifier_reward.last_format_violations = []
    return verifier_reward
