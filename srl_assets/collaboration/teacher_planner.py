"""TeacherPlanner: turns a task and its retrieved lore into an expert trajectory.

Teachers are registered by name. ``procedural`` (the default) solves tasks from the rules through
the domain's planner. ``openai`` asks an OpenAI-compatible chat endpoint and ``hf`` a local Hugging
Face causal LM; their outputs are untrusted and go through the same Verifier as everything else.
"""

from __future__ import annotations

import abc
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


class TeacherError(RuntimeError):
    """The teacher could not answer a task (after its retries): the task is rejected with ``reason``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts and dropped connections pass; a 4xx other than 429
    (a bad key, an unknown model, a malformed request) will not."""
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.RateLimitError)):  # timeouts are connection errors
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@register_teacher("openai")
class OpenAICompatibleTeacher(TeacherPlanner):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, vLLM, TGI, ...) through the
    official ``openai`` SDK; retries with exponential backoff (tenacity) on 429, 5xx and connection
    errors, and a per-call timeout."""

    def __init__(self, domain: Domain, rules: Rules, base_url: str, model: str,
                 api_key: str | None = None, temperature: float = 0.2, timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 30.0):
        import openai

        super().__init__(domain, rules)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.max_retries = max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        # The key is this teacher's own (TEACHER_API_KEY): an explicit non-empty value, so the SDK
        # never falls back to OPENAI_API_KEY from the environment; an endpoint without auth gets a
        # placeholder. The SDK's own retries are off: tenacity below retries, and logs each wait.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "no-key",
                                     timeout=timeout_s, max_retries=0)

    def __repr__(self) -> str:
        return f"OpenAICompatibleTeacher(base_url={self.base_url!r}, model={self.model!r})"

    def _complete(self, task: Task, lore: list[RetrievedPassage], attempt: int) -> str:
        response = self._client.chat.completions.create(
            model=self.model, temperature=self.temperature + 0.2 * attempt,
            messages=[{"role": "user", "content": teacher_prompt(task, lore)}])
        content = response.choices[0].message.content if response.choices else None
        if not content:
            raise TeacherError("teacher_empty_answer", f"{self.base_url}: model {self.model!r} returned no content")
        return content

    def plan(self, task: Task, lore: list[RetrievedPassage], attempt: int = 0) -> str:
        import openai
        from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        call = retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(self.max_retries + 1),
                     wait=wait_exponential_jitter(initial=self.backoff_s, max=self.max_backoff_s),
                     reraise=True)(self._complete)
        try:
            return call(task, lore, attempt)
        except openai.OpenAIError as exc:
            status = getattr(exc, "status_code", None)
            reason = f"teacher_{type(exc).__name__}" + (f"_{status}" if status else "")
            tries = self.max_retries + 1 if _retryable(exc) else 1
            raise TeacherError(reason, f"{self.base_url} (model {self.model!r}) failed after {tries} "
                               f"call(s): {type(exc).__name__}: {exc}") from exc


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
