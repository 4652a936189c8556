"""POST /v1/render: a spec in, its preview (PNG, or WAV for sound) out; with params, failures are marked."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from srl_assets.collaboration.verifier import Verifier
from srl_assets.serving.auth import ApiKey, require_scope
from srl_assets.serving.errors import BadParams, ServiceUnavailable
from srl_assets.serving.generation import build_task

router = APIRouter(tags=["render"])


class RenderRequest(BaseModel):
    model_type: str
    spec: dict[str, Any] = Field(description="A spec of the model type's shape.")
    params: dict[str, Any] | None = Field(default=None, description="The task's params: the spec is verified "
                                                                    "against them and failures are marked.")
    format: Literal["png", "wav"] = Field(default="png", description="`wav` for model types with audio (sound).")


@router.post("/render", summary="Render a spec to PNG (or WAV)", response_class=Response,
             responses={200: {"content": {"image/png": {}, "audio/wav": {}}}})
async def render(body: RenderRequest, request: Request, _: ApiKey = Depends(require_scope("read"))) -> Response:
    state = request.app.state.serving
    domain, rules = state.domain(body.model_type)
    failures: tuple = ()
    passed = None
    if body.params is not None:
        task = build_task(domain, rules, body.params)
        verdict = Verifier(domain, rules).verify_spec(task, body.spec)
        failures, passed = tuple(verdict.failures), verdict.passed
    try:
        from srl_assets.previews import render as render_spec
    except ImportError as exc:
        raise ServiceUnavailable(f"previews cannot be rendered yet: {exc}") from None
    try:
        rendering = await run_in_threadpool(render_spec, body.model_type, body.spec, failures)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadParams(f"spec: cannot be rendered: {exc}") from None
    headers = {"X-Readable": str(bool(rendering.readable)).lower(),
               "X-Marked": ",".join(rendering.marked)}
    if passed is not None:
        headers["X-Verified"] = str(passed).lower()
    if body.format == "wav":
        if rendering.wav is None:
            raise BadParams(f"format: model type {body.model_type!r} has no audio rendering; use png")
        return Response(rendering.wav, media_type="audio/wav", headers=headers)
    return Response(rendering.png, media_type="image/png", headers=headers)
