"""The serving API's settings: read once from the environment at start-up (no Dagster here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from srl_assets import settings as paths


class SettingsError(ValueError):
    """A serving setting is missing or malformed; the message names the variable."""


def _int_env(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range [{lo}, {hi}]")
    return value


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class ServingSettings:
    """Everything the service reads from the environment. ``api_keys`` never appears in repr."""

    dagster_webserver_url: str = field(
        default="http://127.0.0.1:3000",
        metadata={"help": "DAGSTER_WEBSERVER_URL: the running webserver whose GraphQL API launches runs."})
    dagster_home: Path = field(
        default_factory=paths.dagster_home,
        metadata={"help": "DAGSTER_HOME: holds the pipeline's DuckDB file and serving.db (pins, audit)."})
    duckdb_path: str = field(
        default_factory=paths.duckdb_path,
        metadata={"help": "SRL_DUCKDB_PATH: the pipeline's tables, opened read-only."})
    api_keys: tuple[tuple[str, frozenset[str]], ...] = field(
        default=(), repr=False,
        metadata={"help": "SRL_API_KEYS: comma-separated `key` (read) or `key:train` entries."})
    allow_unauthenticated: bool = field(
        default=False,
        metadata={"help": "SRL_API_ALLOW_UNAUTHENTICATED=1: no keys needed; only when bound to 127.0.0.1."})
    host: str = field(default="127.0.0.1", metadata={"help": "SRL_API_HOST: the address uvicorn binds."})
    port: int = field(default=8000, metadata={"help": "SRL_API_PORT: the port uvicorn binds."})
    max_body_bytes: int = field(
        default=64 * 1024, metadata={"help": "SRL_API_MAX_BODY_BYTES: larger request bodies get 413."})
    max_n: int = field(default=16, metadata={"help": "SRL_API_MAX_N: the most samples per generate call."})
    max_new_tokens: int = field(
        default=512, metadata={"help": "SRL_API_MAX_NEW_TOKENS: the most tokens a generate call may ask."})
    max_examples: int = field(default=1000, metadata={"help": "The most tasks one /v1/examples call returns."})
    duckdb_timeout_s: float = field(
        default=3.0,
        metadata={"help": "SRL_API_DUCKDB_TIMEOUT_S: a read waiting on the pipeline's lock gives up (503)."})
    selection_ttl_s: float = field(
        default=10.0, metadata={"help": "SRL_API_SELECTION_TTL_S: how long the in-memory selection is fresh."})
    teacher_fallback: bool = field(
        default=False,
        metadata={"help": "SRL_API_TEACHER_FALLBACK=1: when no sample passes, answer with the procedural teacher."})
    batch_size: int = field(
        default=16, metadata={"help": "SRL_API_BATCH_SIZE: the most prompts a checkpoint's worker decodes together "
                                      "(requests join and leave the running batch between steps)."})
    torch_threads: int = field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) - 1),
        metadata={"help": "SRL_API_TORCH_THREADS: torch threads of all generation workers together "
                          "(default: cores - 1, at least 1; capped at os.cpu_count())."})
    model_cache_dir: Path | None = field(
        default=None, metadata={"help": "SRL_API_MODEL_CACHE: local copies of checkpoints (default under DAGSTER_HOME)."})
    checkpoint_uri: str = field(
        default_factory=paths.checkpoint_uri,
        metadata={"help": "SRL_CHECKPOINT_URI (else SRL_CHECKPOINT_ROOT): where published checkpoints live."})
    policy_lore_k: int = field(
        default_factory=paths.policy_lore_k,
        metadata={"help": "SRL_POLICY_LORE_K: lore passages in prompts, as the pipeline evaluates them."})
    test_generators: str = field(
        default="",
        metadata={"help": "SRL_SERVING_TEST_GENERATORS: import paths `pkg.mod:register` run at start-up "
                          "(a test/extension hook that registers scripted candidates)."})

    @property
    def serving_db_path(self) -> Path:
        return self.dagster_home / "serving.db"

    @property
    def cache_dir(self) -> Path:
        return self.model_cache_dir or self.dagster_home / "serving_cache"

    @classmethod
    def from_env(cls) -> "ServingSettings":
        cpu = os.cpu_count() or 1
        cache = os.environ.get("SRL_API_MODEL_CACHE")
        return cls(
            dagster_webserver_url=os.environ.get("DAGSTER_WEBSERVER_URL") or "http://127.0.0.1:3000",
            dagster_home=paths.dagster_home(),
            duckdb_path=paths.duckdb_path(),
            api_keys=parse_api_keys(os.environ.get("SRL_API_KEYS", "")),
            allow_unauthenticated=_flag("SRL_API_ALLOW_UNAUTHENTICATED"),
            host=os.environ.get("SRL_API_HOST") or "127.0.0.1",
            port=_int_env("SRL_API_PORT", 8000, 0, 65535),
            max_body_bytes=_int_env("SRL_API_MAX_BODY_BYTES", 64 * 1024, 1024, 64 * 1024 * 1024),
            max_n=_int_env("SRL_API_MAX_N", 16, 1, 256),
            max_new_tokens=_int_env("SRL_API_MAX_NEW_TOKENS", 512, 1, 8192),
            duckdb_timeout_s=_float_env("SRL_API_DUCKDB_TIMEOUT_S", 3.0),
            selection_ttl_s=_float_env("SRL_API_SELECTION_TTL_S", 10.0),
            teacher_fallback=_flag("SRL_API_TEACHER_FALLBACK"),
            batch_size=_int_env("SRL_API_BATCH_SIZE", 16, 1, 256),
            # One core is left to this process (HTTP, validation, verification) by default.
            torch_threads=min(_int_env("SRL_API_TORCH_THREADS", max(1, cpu - 1), 1, 4096), cpu),
            model_cache_dir=Path(cache) if cache else None,
            checkpoint_uri=paths.checkpoint_uri(),
            policy_lore_k=paths.policy_lore_k(),
            test_generators=os.environ.get("SRL_SERVING_TEST_GENERATORS", ""),
        )

    def check_startable(self) -> None:
        """Refuse to serve without keys, unless explicitly allowed on loopback only."""
        if self.api_keys:
            return
        if self.allow_unauthenticated and self.host == "127.0.0.1":
            return
        if self.allow_unauthenticated:
            raise SettingsError(
                f"SRL_API_ALLOW_UNAUTHENTICATED=1 is only allowed when bound to 127.0.0.1, not "
                f"SRL_API_HOST={self.host!r}; set SRL_API_KEYS instead")
        raise SettingsError(
            "no API keys configured: set SRL_API_KEYS to comma-separated `key` (read scope) or "
            "`key:train` (read + training) entries, e.g. SRL_API_KEYS=\"$(openssl rand -hex 16):train\"; "
            "for a local trial on 127.0.0.1 only, SRL_API_ALLOW_UNAUTHENTICATED=1")


def parse_api_keys(raw: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """``"k1,k2:train"`` -> ((k1, {read}), (k2, {read, train})). Errors never echo a key."""
    keys: list[tuple[str, frozenset[str]]] = []
    for i, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        key, sep, scope = entry.partition(":")
        key = key.strip()
        if not key:
            raise SettingsError(f"SRL_API_KEYS entry {i + 1} has an empty key")
        if sep and scope.strip() not in {"train", "read"}:
            raise SettingsError(
                f"SRL_API_KEYS entry {i + 1} has an unknown scope {scope.strip()!r}; use `key` or `key:train`")
        scopes = frozenset({"read", "train"}) if scope.strip() == "train" else frozenset({"read"})
        keys.append((key, scopes))
    return tuple(keys)
