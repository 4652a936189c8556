"""Every error as JSON `{"detail": message}` naming the field or resource; nothing crashes the process."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("srl_assets.serving")


class ServiceUnavailable(Exception):
    """503: a dependency (DuckDB lock, Dagster, a checkpoint) is not available right now."""

    def __init__(self, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class NotFound(Exception):
    """404 naming the resource."""


class BadParams(Exception):
    """422 naming the offending field."""


class NoSamplePassed(Exception):
    """409: the request was fine, but no sample passed verification; the body carries the best verdict."""

    def __init__(self, body: dict):
        super().__init__(body["detail"])
        self.body = body


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        message = f"{_field_name(tuple(first.get('loc', ())))}: {first.get('msg')}"
        return JSONResponse(status_code=422,
                            content={"detail": message, "errors": jsonable_encoder(errors)})

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        return JSONResponse(status_code=503, content={"detail": exc.message}, headers=headers)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(BadParams)
    async def _bad_params(_: Request, exc: BadParams) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(NoSamplePassed)
    async def _no_sample(_: Request, exc: NoSamplePassed) -> JSONResponse:
        return JSONResponse(status_code=409, content=jsonable_encoder(exc.body))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with the traceback for the operator; the client gets a message, the process lives on.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500,
                            content={"detail": f"internal error: {type(exc).__name__}: {exc}"})


class BodySizeLimit:
    """413 for bodies over ``max_bytes``, by Content-Length or while streaming (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(status_code=413, content={
            "detail": f"request body is larger than the limit of {self.max_bytes} bytes "
                      "(SRL_API_MAX_BODY_BYTES)"})
        await response({"type": "http"}, _never_receive, send)


class _TooLarge(Exception):
    pass


async def _never_receive():  # pragma: no cover - JSONResponse never reads the request
    return {"type": "http.disconnect"}
