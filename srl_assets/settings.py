"""Deployment settings, read from the environment (one place; the README's configuration table).

Plain values are read here. Secrets are never read here: ``definitions.build_resources`` hands them
to resources as unresolved ``dg.EnvVar``s (Dagster resolves them inside the run), so no secret is
part of a resource's config, a log line or the UI. Everything defaults to the embedded setup:
files under the Dagster home, the procedural teacher, wandb offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEACHER_KINDS = ("procedural", "openai", "hf")
WANDB_MODES = ("offline", "online", "disabled")


def _env(name: str) -> str | None:
    """A variable's value, with an empty one counted as unset."""
    return os.environ.get(name) or None


def dagster_home() -> Path:
    return Path(_env("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")


def duckdb_path() -> str:
    return _env("SRL_DUCKDB_PATH") or str(dagster_home() / "srl.duckdb")


def checkpoint_uri() -> str:
    """``SRL_CHECKPOINT_URI`` (a folder or s3://bucket/prefix), else ``SRL_CHECKPOINT_ROOT`` (the
    older name, a folder), else ``<DAGSTER_HOME>/checkpoints``."""
    uri = _env("SRL_CHECKPOINT_URI") or _env("SRL_CHECKPOINT_ROOT") or str(dagster_home() / "checkpoints")
    if "://" in uri and not uri.startswith(("s3://", "file://")):
        raise ValueError(f"SRL_CHECKPOINT_URI must be a folder or s3://bucket/prefix, got {uri!r}")
    return uri


def policy_lore_k() -> int:
    """Lore passages in the policy's prompts (0 for the tiny default; 2 for a real model)."""
    raw = os.environ.get("SRL_POLICY_LORE_K", "0")
    if not raw.isdigit():
        raise ValueError(f"SRL_POLICY_LORE_K must be a non-negative integer, got {raw!r}")
    return int(raw)


def warm_start() -> bool:
    """Whether training children fork from a server that imported torch, transformers and TRL once
    (``srl_assets.training.warm_start``): ``SRL_WARM_START`` 1 (default) or 0 (every child cold)."""
    raw = os.environ.get("SRL_WARM_START", "1")
    if raw not in ("0", "1"):
        raise ValueError(f"SRL_WARM_START must be 0 or 1, got {raw!r}")
    return raw == "1"


@dataclass(frozen=True)
class TeacherSettings:
    kind: str
    base_url: str | None
    model: str | None
    timeout_s: float
    has_key: bool  # whether TEACHER_API_KEY is set; its value is never read here


def teacher() -> TeacherSettings:
    kind = _env("SRL_TEACHER") or "procedural"
    if kind not in TEACHER_KINDS:
        raise ValueError(f"SRL_TEACHER must be one of {TEACHER_KINDS}, got {kind!r}")
    base_url, model = _env("TEACHER_BASE_URL"), _env("TEACHER_MODEL")
    if kind == "openai" and not (base_url and model):
        raise ValueError("SRL_TEACHER=openai needs TEACHER_BASE_URL (e.g. https://api.openai.com/v1) and "
                         "TEACHER_MODEL; its key is TEACHER_API_KEY")
    if kind == "hf" and not model:
        raise ValueError("SRL_TEACHER=hf needs TEACHER_MODEL (a local Hugging Face model folder)")
    raw_timeout = _env("TEACHER_TIMEOUT_S") or "60"
    try:
        timeout_s = float(raw_timeout)
    except ValueError as exc:
        raise ValueError(f"TEACHER_TIMEOUT_S must be a number of seconds, got {raw_timeout!r}") from exc
    return TeacherSettings(kind, base_url, model, timeout_s, has_key=_env("TEACHER_API_KEY") is not None)


@dataclass(frozen=True)
class WandbSettings:
    mode: str
    project: str
    entity: str | None
    has_key: bool  # whether WANDB_API_KEY is set; its value is never read here


def wandb() -> WandbSettings:
    mode = _env("WANDB_MODE") or "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"WANDB_MODE must be one of {WANDB_MODES}, got {mode!r}")
    return WandbSettings(mode, _env("WANDB_PROJECT") or "srl-platform", _env("WANDB_ENTITY"),
                         has_key=_env("WANDB_API_KEY") is not None)
