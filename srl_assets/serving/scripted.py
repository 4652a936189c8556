"""Scripted candidates: a test and extension hook for the serving API (no model needed).

``SRL_SERVING_TEST_GENERATORS=srl_assets.serving.scripted:register`` registers two candidates that
any model type can select or pin:

* ``scripted:teacher`` writes the procedural teacher's trajectory (always passes verification);
* ``scripted:mutated`` writes the teacher's trajectory with its spec broken, by the domain's own
  ``mutate``, for the task's first skill (fails verification naming that skill).

A deployment adds its own candidates the same way: a ``register(registry)`` function that calls
``registry.register(name)(factory)`` with ``factory(name, model_type, domain, rules)``.
"""

from __future__ import annotations

import random

from srl_assets.domains.base import Domain, Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.registry import Registry
from srl_assets.serving.candidates import REGISTERED, CandidateGenerator, CandidateInfo, Generation
from srl_assets.trajectory import render_trajectory


class ScriptedCandidate(CandidateGenerator):
    def __init__(self, name: str, domain: Domain, rules: Rules, mutate: bool):
        self.info = CandidateInfo(name=name, kind=REGISTERED)
        self.domain, self.rules, self.mutate = domain, rules, mutate

    def text(self, task: Task) -> str:
        plan = self.domain.plan(task.params, self.rules)
        spec = plan.spec
        if self.mutate:
            spec = self.domain.mutate(task.skills[0], task.params, spec, self.rules, random.Random(0))
        return render_trajectory(plan.steps, spec)

    async def generate(self, tasks, prompts, max_new_tokens, temperature):
        return [Generation(self.text(t), len(p.split()), 0, 0.0) for t, p in zip(tasks, prompts, strict=True)]


def register(registry: Registry) -> None:
    for name, mutate in (("scripted:teacher", False), ("scripted:mutated", True)):
        if name not in registry:
            registry.register(name)(
                lambda n, model_type, domain, rules, m=mutate: ScriptedCandidate(n, domain, rules, m))
