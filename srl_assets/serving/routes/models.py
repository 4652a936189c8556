"""Candidates per model type, and what serves each: pins, rollback, the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from srl_assets.domains import MODEL_TYPES
from srl_assets.selection.dynamic_model_selector import Candidate
from srl_assets.serving.auth import ApiKey, require_scope
from srl_assets.serving.errors import NotFound
from srl_assets.serving.routing import RoutingState, SelectionView, Serving

router = APIRouter(tags=["models"])


def _float(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def _cost_per_1k(paid: dict[str, Any], report: dict[str, Any]) -> float:
    """What the selector charges per 1,000 output tokens: 0 for a local checkpoint, a paid model's prices."""
    if not paid:
        return 0.0
    return Candidate(paid["candidate"], "paid", 0.0, 0.0, input_per_1k=float(paid.get("input_per_1k_usd") or 0.0),
                     output_per_1k=float(paid.get("output_per_1k_usd") or 0.0),
                     hosting_per_hour=float(paid.get("hosting_per_hour_usd") or 0.0)).total_cost_per_1k


def candidates_of(view: SelectionView, registered: set[str]) -> list[dict[str, Any]]:
    """Every candidate of the latest report (plus paid and selected ones), with its evidence."""
    names = list(view.candidates) + [r["chosen"] for r in view.selection.values()] + list(view.paid)
    out = []
    for name in dict.fromkeys(names):
        report = view.candidates.get(name, {})
        paid = view.paid.get(name, {})
        selected = [{"skill": skill, "utility": _float(row.get("score")), "runner_up": row.get("runner_up"),
                     "runner_up_utility": _float(row.get("runner_up_score")), "margin": _float(row.get("margin")),
                     "explanation": row.get("explanation")}
                    for skill, row in sorted(view.selection.items()) if row["chosen"] == name]
        kind = "paid" if name.startswith("paid:") else "registered" if name in registered else "local"
        out.append({
            "name": name, "kind": kind, "report_id": view.report_id,
            "n": int(report["n"]) if report else None,
            "pass_rate": _float(report.get("pass_rate")), "ci_low": _float(report.get("ci_low")),
            "ci_high": _float(report.get("ci_high")),
            "cost_per_1k_tokens": _cost_per_1k(paid, report),
            "mean_latency_s": _float(report.get("mean_latency_s")),
            "mean_output_tokens": _float(report.get("mean_output_tokens")),
            "selected_for": selected,
        })
    return out


def serving_dict(state: RoutingState) -> dict[str, Any]:
    def one(s: Serving | None) -> dict[str, Any] | None:
        return None if s is None else {"pin": s.pin, "routes": s.routes, "report_id": s.report_id}

    return {"current": one(state.current), "previous": one(state.previous),
            "considered_report_id": state.considered_report_id}


def _check_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise NotFound(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")


@router.get("/models", summary="Every candidate with pass rate, 95% interval, cost, latency and selection")
async def list_models(request: Request, model_type: str | None = Query(default=None, description="Filter."),
                      _: ApiKey = Depends(require_scope("read"))) -> dict[str, Any]:
    state = request.app.state.serving
    types = MODEL_TYPES
    if model_type is not None:
        _check_type(model_type)
        types = (model_type,)
    registered = state.candidates.registered_names()
    result = []
    for mt in types:
        view = await run_in_threadpool(state.router.view, mt)
        result.append({"model_type": mt, "report_id": view.report_id,
                       "candidates": candidates_of(view, registered),
                       "serving": serving_dict(state.router.state(mt))})
    return {"model_types": result}


class PinRequest(BaseModel):
    candidate: str = Field(description="A candidate of this model type (see GET /v1/models).")
    reason: str = Field(min_length=1, max_length=500, description="Why; recorded in the audit log.")


class ReasonRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="Why; recorded in the audit log.")


@router.get("/models/{model_type}/serving", summary="What serves a model type now, and what rollback restores")
async def get_serving(model_type: str, request: Request,
                      _: ApiKey = Depends(require_scope("read"))) -> dict[str, Any]:
    _check_type(model_type)
    state = request.app.state.serving
    await run_in_threadpool(state.router.view, model_type)
    return {"model_type": model_type, **serving_dict(state.router.state(model_type))}


@router.put("/models/{model_type}/pin", summary="Pin the serving candidate (train scope)")
async def pin(model_type: str, body: PinRequest, request: Request,
              key: ApiKey = Depends(require_scope("train"))) -> dict[str, Any]:
    _check_type(model_type)
    state = request.app.state.serving
    known = await run_in_threadpool(state.router.known_candidates, model_type, state.candidates.registered_names())
    if body.candidate not in known:
        raise NotFound(f"unknown candidate {body.candidate!r} for {model_type!r}; known: {sorted(known)}")
    new = state.router.pin(model_type, body.candidate, key.key_id, body.reason)
    return {"model_type": model_type, **serving_dict(new)}


@router.delete("/models/{model_type}/pin", summary="Remove the pin (train scope)")
async def unpin(model_type: str, request: Request, reason: str = Query(min_length=1, max_length=500),
                key: ApiKey = Depends(require_scope("train"))) -> dict[str, Any]:
    _check_type(model_type)
    new = request.app.state.serving.router.unpin(model_type, key.key_id, reason)
    return {"model_type": model_type, **serving_dict(new)}


@router.post("/models/{model_type}/rollback", summary="Restore the previous serving state in one call (train scope)")
async def rollback(model_type: str, body: ReasonRequest, request: Request,
                   key: ApiKey = Depends(require_scope("train"))) -> dict[str, Any]:
    _check_type(model_type)
    new = request.app.state.serving.router.rollback(model_type, key.key_id, body.reason)
    return {"model_type": model_type, **serving_dict(new)}


@router.get("/models/{model_type}/audit", summary="Every serving change: who (key id), what, why")
async def audit(model_type: str, request: Request, limit: int = Query(default=100, ge=1, le=1000),
                _: ApiKey = Depends(require_scope("read"))) -> dict[str, Any]:
    _check_type(model_type)
    return {"model_type": model_type, "entries": request.app.state.serving.store.audit(model_type, limit)}
