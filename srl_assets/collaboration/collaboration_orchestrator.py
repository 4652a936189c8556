"""CollaborationOrchestrator: retrieve -> plan -> verify for each task, with retries.

Only verified trajectories are kept. Acceptances, rejections and their reasons (by skill) are
counted so the ``trajectories`` asset can show them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from srl_assets.collaboration.lore_retriever import LoreRetriever, RetrievedPassage
from srl_assets.collaboration.teacher_planner import TeacherError, TeacherPlanner
from srl_assets.collaboration.verifier import Verdict, Verifier
from srl_assets.dynamic_example_generator import Task


@dataclass
class AcceptedTrajectory:
    task: Task
    lore: list[RetrievedPassage]
    text: str
    verdict: Verdict
    attempts: int


@dataclass
class CollaborationResult:
    accepted: list[AcceptedTrajectory] = field(default_factory=list)
    rejected_tasks: list[str] = field(default_factory=list)
    attempts: int = 0
    rejected_attempts: int = 0
    rejection_reasons: Counter = field(default_factory=Counter)
    teacher_errors: list[str] = field(default_factory=list)  # the provider's messages, one per failed task

    @property
    def acceptance_rate(self) -> float:
        return len(self.accepted) / max(1, len(self.accepted) + len(self.rejected_tasks))


class CollaborationOrchestrator:
    def __init__(self, retriever: LoreRetriever, teacher: TeacherPlanner, verifier: Verifier,
                 max_attempts: int = 3):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.retriever = retriever
        self.teacher = teacher
        self.verifier = verifier
        self.max_attempts = max_attempts

    def run(self, tasks: list[Task]) -> CollaborationResult:
        result = CollaborationResult()
        for task in tasks:
            lore = self.retriever.retrieve(task)
            for attempt in range(self.max_attempts):
                result.attempts += 1
                try:
                    text = self.teacher.plan(task, lore, attempt)
                except TeacherError as exc:
                    # The teacher already retried what can pass on a retry; another attempt would
                    # only ask again. The task is rejected with the provider's reason.
                    result.rejected_attempts += 1
                    result.rejection_reasons[exc.reason] += 1
                    result.teacher_errors.append(str(exc))
                    result.rejected_tasks.append(task.task_id)
                    break
                verdict = self.verifier.verify_trajectory(task, text)
                if verdict.passed:
                    result.accepted.append(AcceptedTrajectory(task, lore, text, verdict, attempt + 1))
                    break
                result.rejected_attempts += 1
                result.rejection_reasons.update(f.skill for f in verdict.failures)
            else:
                result.rejected_tasks.append(task.task_id)
        return result
