"""Verifier: checks a trajectory's format and its final spec against the task and the rules.

It reads model output, so it never raises on it, however malformed: input size and JSON depth are
bounded before parsing, the spec's shape is checked before any domain rule reads a value, and the
result is always a ``Verdict`` with a score in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from srl_assets.domains.base import Domain, Failure, Rules
from srl_assets.domains.shape import shape_errors
from srl_assets.dynamic_example_generator import Task
from srl_assets.trajectory import parse_spec, parse_trajectory

FORMAT_SKILL = "format"  # the trajectory or spec could not be read at all
SCHEMA_SKILL = "schema"  # the spec is JSON but not of the model type's shape


@dataclass
class Verdict:
    passed: bool
    score: float
    failures: list[Failure] = field(default_factory=list)

    @property
    def format_ok(self) -> bool:
        return not any(f.skill in (FORMAT_SKILL, SCHEMA_SKILL) for f in self.failures)

    @property
    def failed_skills(self) -> list[str]:
        return sorted({f.skill for f in self.failures})

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "score": self.score,
                "failures": [{"skill": f.skill, "reason": f.reason} for f in self.failures]}


class Verifier:
    def __init__(self, domain: Domain, rules: Rules):
        self.domain = domain
        self.rules = rules

    def verify_trajectory(self, task: Task, text: Any) -> Verdict:
        """Format of the whole trajectory, then the spec in its final step."""
        parsed = parse_trajectory(text)
        if not parsed.ok:
            return _reject(FORMAT_SKILL, "; ".join(parsed.errors[:3]))
        return self.verify_spec_text(task, parsed.steps[-1].action)

    def verify_spec_text(self, task: Task, spec_text: Any) -> Verdict:
        if not isinstance(spec_text, str):
            return _reject(FORMAT_SKILL, f"spec must be text, got {type(spec_text).__name__}")
        spec, error = parse_spec(spec_text)
        if spec is None:
            return _reject(FORMAT_SKILL, error or "unreadable spec")
        return self.verify_spec(task, spec)

    def verify_spec(self, task: Task, spec: Any) -> Verdict:
        errors = shape_errors(spec, self.domain.spec_shape)
        if errors:
            return _reject(SCHEMA_SKILL, "; ".join(errors[:3]))
        failures = self.domain.check(task.params, spec, self.rules)
        checked = list(task.skills)
        failed = {f.skill for f in failures}
        unknown = failed - set(checked)
        if unknown:  # a domain bug, not a model error: say so loudly
            raise AssertionError(f"{self.domain.name}.check reported skills {sorted(unknown)} "
                                 f"that the task does not exercise ({checked})")
        score = 1.0 - len(failed) / len(checked) if checked else 1.0
        return Verdict(passed=not failures, score=score, failures=failures)


def _reject(skill: str, reason: str) -> Verdict:
    return Verdict(passed=False, score=0.0, failures=[Failure(skill, reason)])
