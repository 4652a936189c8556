"""POST /v1/generate: a verified spec for a task, from the candidate that serves its model type."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.serving.auth import ApiKey, require_scope
from srl_assets.serving.errors import BadParams
from srl_assets.serving.generation import generate_verified

router = APIRouter(tags=["generate"])


class GenerateRequest(BaseModel):
    model_type: str = Field(description="One of the platform's model types, e.g. `plant`.")
    params: dict[str, Any] = Field(description="The task's parameters, as the DynamicExampleGenerator draws "
                                               "them (see POST /v1/examples); validated by the domain.")
    n: int = Field(default=4, ge=1, description="Samples to try at most (bounded by SRL_API_MAX_N).")
    max_new_tokens: int = Field(default=TRAJECTORY_MAX_NEW_TOKENS, ge=1, description="Tokens per sample (bounded "
                                "by SRL_API_MAX_NEW_TOKENS).")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0,
                                      description="Temperature of the samples after the first (greedy) one; "
                                                  "default 1.0.")
    preview: bool = Field(default=False, description="Also return a rendered PNG preview (base64).")


class Verdict(BaseModel):
    passed: bool
    score: float
    failed_skills: list[str]
    failures: list[dict[str, str]]


class GenerateResponse(BaseModel):
    spec: dict[str, Any] = Field(description="A spec the verifier accepted (never an unverified one).")
    verdict: Verdict
    candidate: dict[str, Any] = Field(description="Who answered: name, kind, stage and checkpoint sha256, "
                                                  "or provider and model id.")
    samples_tried: int
    tokens: dict[str, int]
    latency_s: float
    fallback: str | None = Field(description="`teacher` when the procedural teacher answered instead.")
    routing: str = Field(description="Why this candidate served the request (pinned / selected for ...).")
    task: dict[str, Any]
    candidate_best_verdict: Verdict | None = None
    preview_png_base64: str | None = None
    preview_error: str | None = None


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_none=True,
             responses={409: {"description": "No sample passed verification; the body has the best verdict."},
                        404: {"description": "Unknown model type."},
                        503: {"description": "No candidate, a checkpoint that cannot be loaded, or DuckDB busy."}})
async def generate(body: GenerateRequest, request: Request,
                   _: ApiKey = Depends(require_scope("read"))) -> dict[str, Any]:
    settings = request.app.state.settings
    if body.n > settings.max_n:
        raise BadParams(f"n: {body.n} is above the limit of {settings.max_n} (SRL_API_MAX_N)")
    if body.max_new_tokens > settings.max_new_tokens:
        raise BadParams(f"max_new_tokens: {body.max_new_tokens} is above the limit of {settings.max_new_tokens} "
                        "(SRL_API_MAX_NEW_TOKENS)")
    state = request.app.state.serving
    outcome = await generate_verified(state, body.model_type, body.params, body.n, body.max_new_tokens,
                                      body.temperature)
    result = outcome.body()
    if body.preview:
        result.update(_preview(body.model_type, outcome.spec))
    return result


def _preview(model_type: str, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        from srl_assets.previews import render
    except ImportError as exc:
        return {"preview_error": f"previews cannot be rendered in this deployment: {exc}"}
    rendering = render(model_type, spec)
    return {"preview_png_base64": base64.b64encode(rendering.png).decode()}
