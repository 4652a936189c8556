"""TrainingResource: where training children keep their work, and how they are launched."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import os
import signal
import time
from collections.abc import Mapping, Sequence
from subprocess import Popen, TimeoutExpired

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterPipesExecutionError
from dagster._core.pipes.utils import open_pipes_session
from dagster._utils import send_interrupt
from pydantic import Field

from srl_assets.training.warm_start import WarmStarter  # standard library only: light for every run process

# What every child inherits from the parent's environment: how to find Python, its packages and
# the accelerators, nothing that authenticates. Credentials reach a child only when its job needs
# them (the checkpoint store's AWS variables, the wandb key in online mode).
BASE_CHILD_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                  "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                  "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                  "WANDB_SILENT", "SRL_WORK_ROOT")
# The standard AWS variables boto3 reads: credentials, region, endpoint, and the pod/ECS role chain.
AWS_CHILD_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


def child_env_names(checkpoint_uri: str | None) -> tuple[str, ...]:
    """Names of the parent's variables a training child inherits: the base set, plus the AWS ones
    when checkpoints live in S3 (the child reads its inputs and writes its output there)."""
    return BASE_CHILD_ENV + (AWS_CHILD_ENV if (checkpoint_uri or "").startswith("s3://") else ())


class ChildProcessClient(dg.PipesSubprocessClient):
    """``PipesSubprocessClient`` whose child gets an explicit environment instead of ``os.environ``.

    Dagster's client starts every child with the parent's whole environment (a webserver's or
    daemon's secrets included). This one passes only the variables named in ``inherit`` (their
    values read when the child starts, never stored) plus what the caller passes for the job.

    With ``warm_start``, a ``python -m ...`` child forks from a server of this process that imported the
    training stack once (``srl_assets.training.warm_start``: the same command line, environment, stdio,
    exit status and signals, 5 s less start-up per child on a 2-core machine); other commands
    (``accelerate launch``) start as they are.
    """

    def __init__(self, inherit: Sequence[str] = BASE_CHILD_ENV, warm_start: bool | WarmStarter = False, **kwargs):
        """``warm_start``: True (a ``WarmStarter`` that preloads the training stack), False, or a
        ``WarmStarter`` of the caller's."""
        super().__init__(**kwargs)
        self.inherit = tuple(inherit)
        self.warm_starter: WarmStarter | None = WarmStarter() if warm_start is True else (warm_start or None)

    def child_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**{k: os.environ[k] for k in self.inherit if k in os.environ}, **self.env, **(env or {})}

    def run(self, *, context, extras=None, command: str | Sequence[str], env: Mapping[str, str] | None = None,
            cwd: str | None = None):
        # Same as PipesSubprocessClient.run (dagster 1.13) but with child_env() for os.environ.
        with open_pipes_session(context=context, context_injector=self.context_injector,
                                message_reader=self.message_reader, extras=extras) as session:
            child_env = {**self.child_env(env), **session.get_bootstrap_env_vars()}
            if self.warm_starter is not None:
                command = self.warm_starter.command(command, child_env)
            process = Popen(command, cwd=cwd or self.cwd, env=child_env)
            try:
                _wait_unless_canceled(context, process)
                if process.returncode != 0:
                    raise DagsterPipesExecutionError(
                        f"External execution process failed with code {process.returncode}")
            except DagsterExecutionInterruptedError:
                if self.forward_termination:
                    context.log.info("[pipes] execution interrupted, sending SIGINT to subprocess.")
                    process.send_signal(signal.SIGINT)
                    process.wait(timeout=self.termination_timeout_seconds)
                raise
        return dg.PipesClientCompletedInvocation(session)


CANCEL_POLL_S = 1.0


def _run_canceling(context) -> bool:
    instance, run_id = getattr(context, "instance", None), getattr(context, "run_id", None)
    run = instance.get_run_by_id(run_id) if instance is not None and run_id else None
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


def _wait_unless_canceled(context, process: Popen) -> None:
    """Wait for the child; once the run is being canceled, interrupt this process as Dagster would have.

    Dagster interrupts a canceled run with a SIGINT to the run worker, but a signal that arrives between two
    steps can be dropped: a run canceled during a data step then trained on for minutes (seen in
    tests/test_training_jobs_api.py). Dagster's own remedy, a thread that polls the run's status
    (``dagster._core.execution.run_cancellation_thread``), is off in open-source instances, so this wait
    polls it and re-sends the interrupt, which Dagster turns into DagsterExecutionInterruptedError here."""
    while True:
        try:
            process.wait(timeout=CANCEL_POLL_S)
            return
        except TimeoutExpired:
            if _run_canceling(context):
                send_interrupt()
                time.sleep(CANCEL_POLL_S)  # the handler raises in this thread at the next bytecode
                raise DagsterExecutionInterruptedError()  # no handler of Dagster's was installed


class TrainingResource(dg.ConfigurableResource):
    work_root: str = Field(description="Intermediate checkpoints and staging (kept across op retries).")
    policy_lore_k: int = Field(default=0, description="Retrieved lore passages shown in the policy's prompts "
                               "(SFT, SRL, RLVR, evaluation). 0 for the embedded tiny model, which learns the "
                               "rules faster without them in 20 CPU minutes; 2 for a real model (see configs/).")
    job_store_uri: str | None = Field(default=None, description="Checkpoint store (a folder or s3://bucket/"
                                      "prefix) through which a child gets its inputs and model and returns its "
                                      "output, so it shares no files with the parent (Kubernetes, ECS). Empty = "
                                      "the child reads and writes the parent's work folder directly.")
    accelerate_when_multi_gpu: bool = Field(default=True, description="Start the child with "
                                            "`accelerate launch` when more than one GPU is visible (the stages "
                                            "TRL splits across processes: base SFT, SRL, RLVR GRPO/DPO).")

    def work_dir(self, stage: str, model_type: str, identity: dict[str, Any]) -> Path:
        """Stable per (stage, partition, inputs, config): a retried op finds its own checkpoints."""
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return Path(self.work_root) / stage / model_type / digest

    def command(self, stage: str, config: dict[str, Any] | None = None) -> list[str]:
        """The child's command line: under ``accelerate launch`` (one process per GPU) when more than
        one GPU is visible and the stage's trainer splits across processes (see
        ``srl_assets.training.processes``); a single process otherwise."""
        from srl_assets.training.processes import splits_across_processes

        child = ["-m", "srl_assets.training.child"]
        gpus = self._visible_gpus()
        if self.accelerate_when_multi_gpu and gpus > 1 and splits_across_processes(stage, config):
            return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                    *child]
        return [sys.executable, *child]

    def portable_job(self, spec: dict[str, Any], rules_dir: str | None) -> dict[str, Any]:
        """Upload a job's inputs (rows, and a custom rules folder's files) to the job store and return
        the job a child gets: store references only, no path on this machine's disk."""
        from resources.checkpoint_store import checkpoint_store_from_uri
        from srl_assets.training.child import INPUT

        work_dir = Path(spec["work_dir"])
        rel = work_dir.relative_to(self.work_root).as_posix()
        staging = work_dir / "job-input"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(spec["data"], staging / "input.jsonl")
        if rules_dir:
            (staging / "rules").mkdir()
            for suffix in (".yaml", ".md"):
                shutil.copyfile(Path(rules_dir) / f"{spec['model_type']}{suffix}", staging / "rules" / f"{spec['model_type']}{suffix}")
        job_key = f"jobs/{rel}"
        checkpoint_store_from_uri(self.job_store_uri).publish(str(staging), f"{job_key}/{INPUT}")
        shutil.rmtree(staging)
        return {"stage": spec["stage"], "model_type": spec["model_type"], "config": spec["config"],
                "report_to": spec["report_to"], "model_path": spec.get("model_path"), "store": self.job_store_uri,
                "job_key": job_key, "work_subdir": rel, "work_root": str(Path(self.work_root).absolute() / "child")}

    def collect_output(self, job: dict[str, Any], out_dir: Path) -> None:
        """Fetch (verified) what the child published into ``out_dir``, then drop the job's keys."""
        from resources.checkpoint_store import checkpoint_store_from_uri
        from srl_assets.training.child import INPUT, OUTPUT

        store = checkpoint_store_from_uri(job["store"])
        shutil.rmtree(out_dir, ignore_errors=True)
        store.fetch(f"{job['job_key']}/{OUTPUT}", str(out_dir))
        for sub in (INPUT, OUTPUT):
            store.delete(f"{job['job_key']}/{sub}")

    @staticmethod
    def _visible_gpus() -> int:
        import torch

        return torch.cuda.device_count()

    @staticmethod
    def clean(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
