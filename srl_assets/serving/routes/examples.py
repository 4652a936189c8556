"""POST /v1/examples: tasks from the DynamicExampleGenerator's train split, their prompts and skills."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.serving.auth import ApiKey, require_scope
from srl_assets.serving.errors import BadParams

router = APIRouter(tags=["examples"])


class ExamplesRequest(BaseModel):
    model_type: str
    n: int = Field(default=10, ge=1, description="Tasks to draw (at most 1000).")
    seed: int = Field(default=0, description="Same seed, same tasks.")
    skill_weights: dict[str, float] = Field(default_factory=dict,
                                            description="Bias the draw towards these skills (weights > 0).")


@router.post("/examples", summary="Tasks (params, prompt, skills) from the train split")
async def examples(body: ExamplesRequest, request: Request,
                   _: ApiKey = Depends(require_scope("read"))) -> dict[str, Any]:
    state = request.app.state.serving
    limit = state.settings.max_examples
    if body.n > limit:
        raise BadParams(f"n: {body.n} is above the limit of {limit} examples per call")
    domain, rules = state.domain(body.model_type)
    try:
        generator = DynamicExampleGenerator(domain, rules, skill_weights=body.skill_weights)
    except ValueError as exc:
        raise BadParams(f"skill_weights: {exc}") from None

    def draw() -> list[dict[str, Any]]:
        tasks = generator.generate(body.n, "train", body.seed)
        prompts = policy_prompts(tasks, rules, state.settings.policy_lore_k)
        return [{"task_id": t.task_id, "params": t.params, "skills": list(t.skills), "prompt": p}
                for t, p in zip(tasks, prompts, strict=True)]

    return {"model_type": body.model_type, "seed": body.seed, "rules_version": rules.version,
            "examples": await run_in_threadpool(draw)}
