"""Weights & Biases settings for training runs: offline by default, online when asked and keyed.

Training runs in a child process (Dagster Pipes), so the main product of this resource is
``run_env()``: the environment the child needs. ``init()`` is for code that logs from the Dagster
process itself. The API key is never part of the repr/str and is passed to the child only in
online mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

WANDB_MODES = ("offline", "online", "disabled")
# A terminal login prompt must never hang a run; with no key wandb fails after this many seconds.
_LOGIN_TIMEOUT_S = 10.0


class WandbResource(dg.ConfigurableResource):
    """Experiment tracking with wandb. Wire the key as ``api_key=dg.EnvVar("WANDB_API_KEY")``."""

    project: str = Field(default="srl-platform", description="wandb project that runs are logged to.")
    entity: str | None = Field(default=None, description="wandb team or user that owns the project "
                               "(empty = the key's default entity).")
    mode: str = Field(
        default="offline",
        description=(
            "'offline' (default: no account or network, sync later with `wandb sync`), "
            "'online' (needs an API key), or 'disabled' (wandb calls become no-ops)."
        ),
    )
    api_key: str | None = Field(
        default=None,
        description="wandb API key; used only when mode is 'online'. Set from dg.EnvVar('WANDB_API_KEY').",
    )
    dir: str = Field(
        default=".dagster_home/wandb",
        description="Folder for wandb's local files (offline runs live here until synced).",
    )

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, value: str) -> str:
        if value not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {value!r}")
        return value

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        # the key itself never appears; only whether one is set
        yield "project", self.project
        yield "entity", self.entity
        yield "mode", self.mode
        yield "api_key", "<set>" if self.api_key else None
        yield "dir", self.dir

    def _abs_dir(self) -> str:
        """Absolute and created: the child process may run in another working directory."""
        path = os.path.abspath(self.dir)
        os.makedirs(path, exist_ok=True)
        return path

    def _online_key(self) -> str | None:
        """The key to hand over: only in online mode (an offline run must not carry credentials)."""
        return self.api_key if self.mode == "online" and self.api_key else None

    def run_env(self) -> dict[str, str]:
        """Environment variables for a child training process (merge into its env)."""
        env = {
            "WANDB_MODE": self.mode,
            "WANDB_PROJECT": self.project,
            "WANDB_DIR": self._abs_dir(),
        }
        if self.entity:
            env["WANDB_ENTITY"] = self.entity
        key = self._online_key()
        if key is not None:
            env["WANDB_API_KEY"] = key
        return env

    def init(self, run_name: str, config: dict[str, Any], group: str | None = None) -> Any:
        """Start a wandb run in this process with these settings; the caller must ``run.finish()``.

        Never prompts: in online mode the key is passed explicitly (not written to ~/.netrc), a
        missing key fails instead of silently falling back to offline, and a login wait is bounded.
        """
        import wandb  # heavy import, only when a run is really started

        settings = wandb.Settings(
            api_key=self._online_key(),
            force=self.mode == "online",
            login_timeout=_LOGIN_TIMEOUT_S,
            # several runs may start in one Dagster process (in-process executor): never reuse one
            reinit="create_new",
        )
        return wandb.init(
            project=self.project,
            entity=self.entity,
            name=run_name,
            group=group,
            config=config,
            mode=self.mode,
            dir=self._abs_dir(),
            settings=settings,
        )
