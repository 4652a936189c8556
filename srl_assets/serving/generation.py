"""Verified generation: sample up to n trajectories from the serving candidate, verify each, return the
first that passes (or the best verdict, or the procedural teacher's answer when the fallback is on)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.collaboration.verifier import Verdict, Verifier
from srl_assets.domains.base import Domain, ParamsError, Rules
from srl_assets.dynamic_example_generator import Task, split_of, task_id_of
from srl_assets.prompts import strip_think
from srl_assets.serving.errors import BadParams, NoSamplePassed
from srl_assets.serving.state import ServingState
from srl_assets.trajectory import parse_spec, parse_trajectory, render_trajectory

#: Samples after the first (greedy) one are drawn at this temperature unless the request says otherwise.
DEFAULT_SAMPLE_TEMPERATURE = 1.0


def build_task(domain: Domain, rules: Rules, params: Any) -> Task:
    """A task from client params, validated by the domain (``ParamsError`` -> 422 naming the field)."""
    try:
        domain.validate_params(params, rules)
    except ParamsError as exc:
        raise BadParams(str(exc)) from None
    task_id = task_id_of(domain.name, params)
    task = Task(task_id=task_id, model_type=domain.name, split=split_of(task_id, 0.2), params=params,
                skills=tuple(domain.task_skills(params, rules)), prompt=domain.describe(params, rules), seed=0,
                rules_version=rules.version)
    return task


def verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {"passed": verdict.passed, "score": verdict.score, "failed_skills": verdict.failed_skills,
            "failures": [{"skill": f.skill, "reason": f.reason} for f in verdict.failures]}


def spec_of(text: str) -> dict[str, Any]:
    parsed = parse_trajectory(strip_think(text))
    spec, _ = parse_spec(parsed.steps[-1].action)
    assert spec is not None  # only called on a passing verdict, which parsed it already
    return spec


@dataclass
class Outcome:
    spec: dict[str, Any] | None
    verdict: Verdict
    candidate: dict[str, Any]
    samples_tried: int
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    fallback: str | None = None
    routing: str = ""
    task: Task | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"spec": self.spec, "verdict": verdict_dict(self.verdict), "candidate": self.candidate,
                "samples_tried": self.samples_tried,
                "tokens": {"input": self.input_tokens, "output": self.output_tokens},
                "latency_s": round(self.latency_s, 4), "fallback": self.fallback, "routing": self.routing,
                "task": {"task_id": self.task.task_id, "skills": list(self.task.skills)} if self.task else None,
                **self.extra}


async def generate_verified(state: ServingState, model_type: str, params: Any, n: int, max_new_tokens: int,
                            temperature: float | None) -> Outcome:
    t0 = time.perf_counter()
    domain, rules = state.domain(model_type)
    task = build_task(domain, rules, params)
    # Routing reads DuckDB only when the in-memory selection is stale; otherwise it stays on the event
    # loop (two thread hops per request cost more than the routing itself).
    view = state.router.cached_view(model_type)
    if view is None:
        view = await run_in_threadpool(state.router.view, model_type)
    name, why = state.router.candidate_for(model_type, task.skills, view)
    candidate = await state.candidates.get(name, model_type, domain, rules, view)
    prompt = policy_prompts([task], rules, state.settings.policy_lore_k)[0]
    verifier = Verifier(domain, rules)
    tried, tokens_in, tokens_out = 0, 0, 0
    best: Verdict | None = None
    # First one greedy sample (the pass rate the reports measure), then the rest in one sampled batch.
    rounds = [(1, 0.0), (n - 1, DEFAULT_SAMPLE_TEMPERATURE if temperature is None else temperature)]
    for count, temp in rounds:
        if count <= 0:
            continue
        generations = await candidate.generate([task] * count, [prompt] * count, max_new_tokens, temp)
        for g in generations:
            tried += 1
            tokens_in += g.input_tokens
            tokens_out += g.output_tokens
            verdict = verifier.verify_trajectory(task, strip_think(g.text))
            if verdict.passed:
                return Outcome(spec_of(g.text), verdict, candidate.info.to_dict(), tried, tokens_in, tokens_out,
                               time.perf_counter() - t0, routing=why, task=task)
            if best is None or verdict.score > best.score:
                best = verdict
    assert best is not None
    if state.settings.teacher_fallback:
        plan = domain.plan(task.params, rules)
        verdict = verifier.verify_trajectory(task, render_trajectory(plan.steps, plan.spec))
        if verdict.passed:
            return Outcome(plan.spec, verdict, candidate.info.to_dict(), tried, tokens_in, tokens_out,
                           time.perf_counter() - t0, fallback="teacher", routing=why, task=task,
                           extra={"candidate_best_verdict": verdict_dict(best)})
    failed = ", ".join(best.failed_skills) or "none"
    raise NoSamplePassed({
        "detail": f"no sample of {tried} from candidate {name!r} passed verification; best failed skills: {failed}",
        "best_verdict": verdict_dict(best), "candidate": candidate.info.to_dict(), "samples_tried": tried,
        "tokens": {"input": tokens_in, "output": tokens_out}, "latency_s": round(time.perf_counter() - t0, 4),
        "task": {"task_id": task.task_id, "skills": list(task.skills)}})
