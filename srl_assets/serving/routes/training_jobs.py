"""Training jobs: runs of ``srl_pipeline`` for one model type, through the Dagster webserver's GraphQL API.

A job is a Dagster run, so it queues, runs and shows in the Dagster UI like a run started there; the
API adds presets, auth and answers a game studio's tools can use without knowing GraphQL.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from srl_assets.domains import MODEL_TYPES
from srl_assets.serving.auth import ApiKey, require_scope
from srl_assets.serving.dagster_client import (FINISHED_STATUSES, RUN_STATUSES, DagsterClient, DagsterRejected,
                                               DagsterRunNotFound, DagsterUnavailable, RunInfo)
from srl_assets.serving.errors import BadParams, NotFound, ServiceUnavailable
from srl_assets.settings import REPO_ROOT

JOB_NAME = "srl_pipeline"
PRESETS_DIR = REPO_ROOT / "configs"
_PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

router = APIRouter(prefix="/training-jobs", tags=["training jobs"])


class TrainingJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_type: str = Field(description="The partition to train, e.g. `plant` (see GET /v1/models).")
    preset: str | None = Field(default=None, description="A run-config preset: the name of a file "
                               "`configs/<name>.yaml`, e.g. `demo` or `cpu_long`. Give this or `run_config`.")
    run_config: dict[str, Any] | None = Field(default=None, description="A run config for `srl_pipeline` "
                                              "(as in the Dagster launchpad); Dagster validates it.")


class TrainingJob(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(description="The Dagster run id.")
    model_type: str | None = Field(description="The run's partition.")
    status: str = Field(description="Dagster's run status: QUEUED, STARTING, STARTED, SUCCESS, FAILURE, "
                                    "CANCELING, CANCELED, ...")
    steps_done: int = Field(description="Steps (assets) that succeeded so far.")
    steps_total: int | None = Field(default=None, description="Steps in the run's plan (detail view only).")
    steps: dict[str, str] | None = Field(default=None, description="Step key -> step status (detail view only).")
    preset: str | None = Field(default=None, description="The preset it was launched with, if any.")
    trigger: str | None = Field(default=None, description="Who started it: `api`, `weakness`, ... "
                                                          "(the `srl/trigger` tag); none for runs from the UI.")
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    dagster_url: str = Field(description="The run's page in the Dagster UI.")


def dagster_client(request: Request) -> DagsterClient:
    return DagsterClient(request.app.state.settings.dagster_webserver_url)


def _time(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=timezone.utc) if ts is not None else None


def _job(run: RunInfo, client: DagsterClient, detail: bool = False) -> TrainingJob:
    return TrainingJob(
        id=run.run_id, model_type=run.partition, status=run.status, steps_done=run.steps_done,
        steps_total=run.steps_total if detail else None, steps=run.steps if detail else None,
        preset=run.tags.get("srl/preset"), trigger=run.tags.get("srl/trigger"),
        created_at=_time(run.created_at), started_at=_time(run.started_at), ended_at=_time(run.ended_at),
        dagster_url=client.run_url(run.run_id))


def _check_model_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise NotFound(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")


def preset_names(directory: Path = PRESETS_DIR) -> list[str]:
    """srl_pipeline's presets (``compare_*.yaml`` configure the recipe comparison's job, not this one)."""
    return sorted(p.stem for p in directory.glob("*.yaml") if not p.stem.startswith("compare_"))


def load_preset(name: str, directory: Path = PRESETS_DIR) -> dict[str, Any]:
    """The run config in ``configs/<name>.yaml``; 422 naming the preset when there is no such file."""
    stem = name.removesuffix(".yaml")
    path = directory / f"{stem}.yaml"
    if not _PRESET_NAME.match(stem) or not path.is_file() or stem not in preset_names(directory):
        raise BadParams(f"preset: unknown preset {name!r}; known: {', '.join(preset_names(directory))} "
                        f"(files in configs/)")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise BadParams(f"preset: configs/{stem}.yaml does not hold a run config (a mapping)")
    return config


def _unavailable(exc: DagsterUnavailable) -> ServiceUnavailable:
    return ServiceUnavailable(f"Dagster is unavailable: {exc}", retry_after_s=5)


def _training_run(client: DagsterClient, job_id: str) -> RunInfo:
    try:
        run = client.run(job_id)
    except DagsterRunNotFound:
        raise NotFound(f"no training job with id {job_id!r}") from None
    except DagsterUnavailable as exc:
        raise _unavailable(exc) from exc
    if run.job_name != JOB_NAME:
        raise NotFound(f"run {job_id!r} is a run of {run.job_name!r}, not a training job ({JOB_NAME})")
    return run


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TrainingJob,
             responses={404: {"description": "Unknown model type."},
                        422: {"description": "Unknown preset, or a run config Dagster rejects."},
                        503: {"description": "The Dagster webserver is not reachable."}})
def launch_training_job(body: TrainingJobRequest, key: ApiKey = Depends(require_scope("train")),
                        client: DagsterClient = Depends(dagster_client)) -> TrainingJob:
    """Launch `srl_pipeline` for the model type's partition with a preset or a run config."""
    _check_model_type(body.model_type)
    if (body.preset is None) == (body.run_config is None):
        raise BadParams("preset, run_config: give exactly one: a preset name (one of "
                        f"{', '.join(preset_names())}) or a run config")
    run_config = load_preset(body.preset) if body.preset is not None else body.run_config
    # Who asked is recorded by key id, never by the key itself.
    tags = {"srl/trigger": "api", "srl/requested_by": key.key_id}
    if body.preset is not None:
        tags["srl/preset"] = body.preset.removesuffix(".yaml")
    try:
        run_id = client.launch(JOB_NAME, body.model_type, run_config, tags)
        return _job(client.run(run_id), client, detail=True)
    except DagsterRejected as exc:
        raise BadParams(f"run_config: {exc.message}") from exc
    except DagsterUnavailable as exc:
        raise _unavailable(exc) from exc


@router.get("", response_model=list[TrainingJob],
            responses={404: {"description": "Unknown model type."}, 503: {"description": "Dagster unreachable."}})
def list_training_jobs(model_type: str | None = Query(default=None, description="Only this partition."),
                       status_: str | None = Query(default=None, alias="status",
                                                   description="Only runs in this Dagster status, e.g. STARTED."),
                       limit: int = Query(default=50, ge=1, le=500, description="The newest this many."),
                       _: ApiKey = Depends(require_scope()),
                       client: DagsterClient = Depends(dagster_client)) -> list[TrainingJob]:
    """Training jobs, newest first."""
    if model_type is not None:
        _check_model_type(model_type)
    if status_ is not None and status_.upper() not in RUN_STATUSES:
        raise BadParams(f"status: unknown run status {status_!r}; known: {', '.join(RUN_STATUSES)}")
    try:
        runs = client.runs(JOB_NAME, partition=model_type, statuses=[status_.upper()] if status_ else None,
                           limit=limit)
    except DagsterUnavailable as exc:
        raise _unavailable(exc) from exc
    return [_job(run, client) for run in runs]


@router.get("/{job_id}", response_model=TrainingJob,
            responses={404: {"description": "No such training job."}, 503: {"description": "Dagster unreachable."}})
def get_training_job(job_id: str, _: ApiKey = Depends(require_scope()),
                     client: DagsterClient = Depends(dagster_client)) -> TrainingJob:
    """A job's status, its steps and a link to the run in the Dagster UI."""
    return _job(_training_run(client, job_id), client, detail=True)


@router.post("/{job_id}/cancel", response_model=TrainingJob,
             responses={404: {"description": "No such training job."},
                        409: {"description": "The job has already finished."},
                        503: {"description": "Dagster unreachable."}})
def cancel_training_job(job_id: str, _: ApiKey = Depends(require_scope("train")),
                        client: DagsterClient = Depends(dagster_client)) -> TrainingJob:
    """Terminate the run (a queued run is cancelled before it starts); it ends CANCELED."""
    run = _training_run(client, job_id)
    if run.status in FINISHED_STATUSES:
        raise _conflict(f"training job {job_id} has already finished ({run.status}); nothing to cancel")
    try:
        client.terminate(job_id)
        return _job(client.run(job_id), client, detail=True)
    except DagsterRejected as exc:
        raise _conflict(f"Dagster could not cancel training job {job_id}: {exc.message}")
    except DagsterUnavailable as exc:
        raise _unavailable(exc) from exc


def _conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=message)
