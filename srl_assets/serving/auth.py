"""Bearer API keys and scopes as a FastAPI dependency (keys compared in constant time, never logged)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from srl_assets.serving.settings import ServingSettings

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`; keys from SRL_API_KEYS")


@dataclass(frozen=True)
class ApiKey:
    """Who is calling: a non-secret id (for audit logs) and the key's scopes."""

    key_id: str
    scopes: frozenset[str]


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


LOCAL_ANONYMOUS = ApiKey(key_id="local-unauthenticated", scopes=frozenset({"read", "train"}))


def authenticate(settings: ServingSettings, token: str | None) -> ApiKey | None:
    if not settings.api_keys and settings.allow_unauthenticated:
        return LOCAL_ANONYMOUS
    if not token:
        return None
    found: ApiKey | None = None
    # Compare against every key (no early exit) so timing says nothing about which key matched.
    for key, scopes in settings.api_keys:
        if hmac.compare_digest(key.encode(), token.encode()):
            found = ApiKey(key_id=key_id(key), scopes=scopes)
    return found


def require_scope(scope: str | None = None) -> Callable[..., ApiKey]:
    """A dependency: 401 without a valid key, 403 when the key lacks ``scope``."""

    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop (and GIL handoff)
    # per request for a few microseconds of work.
    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> ApiKey:
        settings: ServingSettings = request.app.state.settings
        token = credentials.credentials if credentials is not None else None
        api_key = authenticate(settings, token)
        if api_key is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or invalid API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"})
        if scope is not None and scope not in api_key.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this API key (id {api_key.key_id}) lacks the '{scope}' scope")
        return api_key

    return dependency

