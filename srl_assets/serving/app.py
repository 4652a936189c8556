"""The serving API: assembles the routers under /v1 (run it with `make serve`)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from srl_assets.serving.errors import BodySizeLimit, install_error_handlers
from srl_assets.serving.settings import ServingSettings, SettingsError


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    try:
        settings = settings or ServingSettings.from_env()
        settings.check_startable()
    except SettingsError as exc:
        # One clear line instead of a traceback: uvicorn exits with status 1.
        raise SystemExit(f"srl serving API refuses to start: {exc}") from None

    from srl_assets.serving.state import ServingState

    state = ServingState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        try:
            yield
        finally:
            state.stop()

    # FastAPI's own /docs loads Swagger UI from a CDN; a studio's network (and CI) may not reach it, so the
    # page and its assets are served by the app itself (fastapi-offline ships them).
    app = FastAPIOffline(
        title="SRL platform serving API",
        version="1",
        description="Verified specs from the selected models; training jobs through Dagster.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.serving = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    from srl_assets.serving.routes import examples, generate, models, render, status, training_jobs

    app.include_router(status.health_router)
    for module in (generate, models, examples, status, render, training_jobs):
        app.include_router(module.router, prefix="/v1")
    return app
