"""DynamicExampleGenerator: fresh tasks drawn from the rules, never a static list.

* Every draw is seeded; the seed is recorded on each task so a run can be reproduced.
* Train and held-out evaluation tasks can never coincide: the split is a pure function of the
  task's content hash (``split_of``), so the same task always lands on the same side.
* Sampling weights per skill bias the draw towards tasks that exercise those skills: each task is
  picked among ``candidates`` draws with probability proportional to the largest weight of the
  skills it exercises (weakness-driven retraining raises the weak skills' weights).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from srl_assets.domains.base import Domain, Rules


@dataclass(frozen=True)
class Task:
    task_id: str
    model_type: str
    split: str
    params: dict[str, Any]
    skills: tuple[str, ...]
    prompt: str
    seed: int
    rules_version: str

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["params"] = json.dumps(self.params, sort_keys=True)
        row["skills"] = list(self.skills)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Task":
        params = row["params"]
        return cls(task_id=row["task_id"], model_type=row["model_type"], split=row["split"],
                   params=json.loads(params) if isinstance(params, str) else params,
                   skills=tuple(row["skills"]), prompt=row["prompt"], seed=int(row["seed"]),
                   rules_version=row["rules_version"])


def task_id_of(model_type: str, params: dict[str, Any]) -> str:
    canonical = json.dumps({"model_type": model_type, "params": params}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def split_of(task_id: str, eval_fraction: float) -> str:
    """Hash split: a task id is eval iff its bucket in [0, 10000) falls under the fraction."""
    bucket = int(hashlib.sha256(f"split:{task_id}".encode()).hexdigest()[:8], 16) % 10_000
    return "eval" if bucket < eval_fraction * 10_000 else "train"


@dataclass
class DynamicExampleGenerator:
    domain: Domain
    rules: Rules
    eval_fraction: float = 0.2
    skill_weights: dict[str, float] = field(default_factory=dict)
    candidates: int = 4
    max_attempts_per_task: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        unknown = set(self.skill_weights) - set(self.domain.skills)
        if unknown:
            raise ValueError(f"skill_weights names unknown skills of {self.domain.name}: "
                             f"{sorted(unknown)}; known: {sorted(self.domain.skills)}")
        for skill, weight in self.skill_weights.items():
            if not weight > 0:
                raise ValueError(f"skill_weights[{skill!r}] must be > 0, got {weight}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")

    def weight_of(self, skills: list[str] | tuple[str, ...]) -> float:
        return max((self.skill_weights.get(s, 1.0) for s in skills), default=1.0)

    def generate(self, n: int, split: str = "train", seed: int = 0) -> list[Task]:
        """``n`` distinct tasks of one split, reproducible from ``seed``."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        rng = random.Random(f"{self.domain.name}:{split}:{seed}")
        tasks: list[Task] = []
        seen: set[str] = set()
        for _ in range(n):
            pool = [self._draw_one(rng, split, seen) for _ in range(self.candidates)]
            weights = [self.weight_of(skills) for _, _, skills in pool]
            task_id, params, skills = rng.choices(pool, weights=weights, k=1)[0]
            seen.add(task_id)
            tasks.append(Task(task_id=task_id, model_type=self.domain.name, split=split,
                              params=params, skills=tuple(skills),
                              prompt=self.domain.describe(params, self.rules), seed=seed,
                              rules_version=self.rules.version))
        return tasks

    def _draw_one(self, rng: random.Random, split: str, seen: set[str]):
        for _ in range(self.max_attempts_per_task):
            params = self.domain.sample_params(rng, self.rules)
            task_id = task_id_of(self.domain.name, params)
            if task_id in seen or split_of(task_id, self.eval_fraction) != split:
                continue
            return task_id, params, self.domain.task_skills(params, self.rules)
        raise RuntimeError(f"{self.domain.name}: no new {split} task after "
                           f"{self.max_attempts_per_task} draws; the rules' task space is too small")
