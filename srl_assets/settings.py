"""Paths of the embedded default: everything lives under the Dagster home."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")


def duckdb_path() -> str:
    return os.environ.get("SRL_DUCKDB_PATH") or str(dagster_home() / "srl.duckdb")


def checkpoint_root() -> str:
    return os.environ.get("SRL_CHECKPOINT_ROOT") or str(dagster_home() / "checkpoints")


def policy_lore_k() -> int:
    """Lore passages in the policy's prompts (0 for the tiny default; 2 for a real model)."""
    raw = os.environ.get("SRL_POLICY_LORE_K", "0")
    if not raw.isdigit():
        raise ValueError(f"SRL_POLICY_LORE_K must be a non-negative integer, got {raw!r}")
    return int(raw)
