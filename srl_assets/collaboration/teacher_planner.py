"""TeacherPlanner: turns a task and its retrieved lore into an expert trajectory.

Teachers are registered by name. ``procedural`` (the default) solves tasks from the rules through
the domain's planner. ``openai`` asks an OpenAI-compatible chat endpoint and ``hf`` a local Hugging
Face causal LM; their outputs are untrusted and go through the same Verifier as everything else.
"""

from __future__ import annotations

import abc
import json
import urllib.request
from typing import Any, Callable

from srl_assets.collaboration.lore_retriever import RetrievedPassage, lore_block
from srl_assets.domains.base import Domain, Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.registry import Registry
from srl_assets.trajectory import FINAL_TITLE, render_trajectory

TEACHERS: Registry[Callable[..., "TeacherPlanner"]] = Registry("teacher")
register_teacher = TEACHERS.register


def make_teacher(name: str, domain: Domain, rules: Rules, **options: Any) -> "TeacherPlanner":
    return TEACHERS.get(name)(domain=domain, rules=rules, **options)


class TeacherPlanner(abc.ABC):
    def __init__(self, domain: Domain, rules: Rules):
        self.domain = domain
        self.rules = rules

    @abc.abstractmethod
    def plan(self, task: Task, lore: list[RetrievedPassage], attempt: int = 0) -> str:
        """An expert trajectory (text of numbered steps ending with the final JSON spec)."""


@register_teacher("procedural")
class ProceduralTeacher(TeacherPlanner):
    """Solves a task from the rules with the domain's own planner (deterministic)."""

    def plan(self, task: Task, lore: list[RetrievedPassage], attempt: int = 0) -> str:
        plan = self.domain.plan(task.params, self.rules)
        return render_trajectory(plan.steps, plan.spec)


def teacher_prompt(task: Task, lore: list[RetrievedPassage]) -> str:
    return (
        "You are an expert content designer. Solve the task in numbered steps, one per line, "
        "each written as `N. **Title** action`. The last step must be "
        f"`N. **{FINAL_TITLE}** <the JSON spec on one line>`.\n\n"
        f"Lore:\n{lore_block(lore)}\n\nTask: {task.prompt}"
    )


@register_teacher("openai")
class OpenAICompatibleTeacher(TeacherPlanner):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI, a hosted API)."""

    def __init__(self, domain: Domain, rules: Rules, base_url: str, model: str,
                 api_key: str | None = None, temperature: float = 0.2, timeout_s: float = 60.0):
        super().__init__(domain, rules)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key  # never logged
        self.temperature = temperature
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"OpenAICompatibleTeacher(base_url={self.base_url!r}, model={self.model!r})"

    def plan(self, task: Task, lore: list[RetrievedPassage], attempt: int = 0) -> str:
        body = {"model": self.model, "temperature": self.temperature + 0.2 * attempt,
                "messages": [{"role": "user", "content": teacher_prompt(task, lore)}]}
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self._api_key}"} if self._api_key else {})})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            payload = json.loads(response.read())
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"{self.base_url}: unexpected chat completion payload "
                               f"(keys {sorted(payload) if isinstance(payload, dict) else type(payload).__name__})") from exc


@register_teacher("hf")
class HFTeacher(TeacherPlanner):
    """A local Hugging Face causal LM (a folder or, where the network allows, a hub name)."""

    def __init__(self, domain: Domain, rules: Rules, model_name_or_path: str,
                 max_new_tokens: int = 512):
        super().__init__(domain, rules)
        from srl_assets.models.tiny import generate, load_model

        self._generate = generate
        self.model, self.tokenizer = load_model(model_name_or_path)
        self.max_new_tokens = max_new_tokens

    def plan(self, task: Task, lore: list[RetrievedPassage], attempt: int = 0) -> str:
        return self._generate(self.model, self.tokenizer, [teacher_prompt(task, lore)],
                              max_new_tokens=self.max_new_tokens,
                              temperature=0.0 if attempt == 0 else 0.7)[0]
