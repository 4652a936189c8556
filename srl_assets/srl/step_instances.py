"""Step-wise SRL instances: a trajectory of N steps gives N instances, the k-th with the task,
its lore and expert steps 1..k-1 as context and step k as the target."""

from __future__ import annotations

from dataclasses import dataclass

from srl_assets.prompts import step_prompt
from srl_assets.trajectory import parse_trajectory


@dataclass(frozen=True)
class StepInstance:
    task_id: str
    step_index: int  # 1-based k
    n_steps: int
    prompt: str
    target: str
    next_title: str


def build_step_instances(task_id: str, task_text: str, lore: str, trajectory: str,
                         show_next_title: bool = True) -> list[StepInstance]:
    parsed = parse_trajectory(trajectory)
    if not parsed.ok:
        raise ValueError(f"task {task_id}: trajectory is malformed: {parsed.errors}")
    texts = [s.text for s in parsed.steps]
    return [
        StepInstance(task_id=task_id, step_index=k, n_steps=len(texts),
                     prompt=step_prompt(task_text, lore, texts[: k - 1],
                                        parsed.steps[k - 1].title if show_next_title else None),
                     target=texts[k - 1], next_title=parsed.steps[k - 1].title)
        for k in range(1, len(texts) + 1)
    ]


def reassemble(instances: list[StepInstance]) -> str:
    """The trajectory the targets spell out, in step order (the asset check compares it)."""
    return "\n".join(i.target for i in sorted(instances, key=lambda i: i.step_index))
