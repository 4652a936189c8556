"""GET /health (liveness, no auth) and GET /v1/status (Dagster, DuckDB, models, latest reports)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from srl_assets.serving.auth import ApiKey, require_scope
from srl_assets.serving.errors import ServiceUnavailable
from srl_assets.serving.tables import TableMissing

health_router = APIRouter(tags=["status"])
router = APIRouter(tags=["status"])


@health_router.get("/health", summary="Liveness (no auth)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _dagster(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"{url.rstrip('/')}/server_info")
        return {"url": url, "reachable": response.status_code == 200,
                "detail": f"HTTP {response.status_code}"}
    except httpx.HTTPError as exc:
        return {"url": url, "reachable": False, "detail": f"Dagster webserver is down: {type(exc).__name__}"}


@router.get("/status", summary="Dagster reachable, DuckDB readable, models loaded, latest report per model type")
async def status(request: Request, _: ApiKey = Depends(require_scope("read"))) -> dict[str, Any]:
    state = request.app.state.serving
    readable, detail = await run_in_threadpool(state.reader.readable)
    latest: list[dict[str, Any]] = []
    if readable:
        try:
            latest = await run_in_threadpool(
                state.reader.rows, "performance_history",
                "SELECT model_type, arg_max(report_id, created_at) AS report_id, max(created_at) AS created_at "
                "FROM performance_history GROUP BY model_type ORDER BY model_type")
        except TableMissing:
            latest = []
        except ServiceUnavailable as exc:
            readable, detail = False, exc.message
    return {
        "dagster": await _dagster(state.settings.dagster_webserver_url),
        "duckdb": {"path": state.settings.duckdb_path, "readable": readable, "detail": detail},
        "models_loaded": state.models.loaded(),
        "generation": state.candidates.stats(),
        "latest_reports": [{**r, "created_at": str(r["created_at"])} for r in latest],
    }
