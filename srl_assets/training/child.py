"""The training child process: ``python -m srl_assets.training.child [--spec job.json]``.

Launched through Dagster Pipes (the subprocess client here; the Kubernetes or ECS Pipes clients
elsewhere), it takes its job from the Pipes extras (``extras["job"]``), streams metrics back as
log lines and reports the materialization. Run by hand, it reads ``--spec``.

A job that names a ``store`` (a folder or ``s3://bucket/prefix``) is self-contained: the child
shares no files with the parent. It fetches its inputs (``<job_key>/input``), its start model and
any candidate checkpoints through the store, works under its own ``SRL_WORK_ROOT`` (default
``./srl-work``), and publishes its output folder to ``<job_key>/output``; credentials come from its
own environment (the standard AWS variables). A job without a store reads and writes the paths it
names (the parent's work folder). Either way the summary is written to ``<out_dir>/summary.json``;
the parent publishes the model atomically, so a killed child never leaves a checkpoint that looks
complete. A crash here cannot take the Dagster process down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

INPUT, OUTPUT = "input", "output"  # sub-keys of a job's key in the store


def _write_summary(spec: dict, summary: dict) -> None:
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "training_config.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "data"},
                                                         indent=1, default=str))


def work_root(spec: dict[str, Any]) -> Path:
    return Path(os.environ.get("SRL_WORK_ROOT") or spec.get("work_root") or "srl-work").absolute()


def localize(job: dict[str, Any]) -> dict[str, Any]:
    """The job with every store reference replaced by a local path under the child's work root.

    Fetches are cached by content (the manifest sha256), verified, and serialized by a lock so the
    ranks of one ``accelerate launch`` fetch once.
    """
    if not job.get("store"):
        return job
    from filelock import FileLock

    from resources.checkpoint_store import checkpoint_store_from_uri, key_of_uri

    store = checkpoint_store_from_uri(job["store"])
    root = work_root(job)
    work = root / job["work_subdir"]
    work.mkdir(parents=True, exist_ok=True)

    def fetch(key: str) -> str:
        dest = root / "fetched" / store.info(key).sha256[:16]
        if not (dest / "_COMPLETE.json").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            store.fetch(key, str(dest))
        return str(dest)

    def resolve(ref: str | None) -> str | None:
        key = key_of_uri(store, ref) if ref else None
        return fetch(key) if key is not None else ref  # a hub name or a path the image ships

    with FileLock(str(root / "fetch.lock")):
        inputs = fetch(f"{job['job_key']}/{INPUT}")
        config = dict(job["config"])
        if "candidates" in config:  # the evaluate stage: one checkpoint per candidate
            config["candidates"] = {name: resolve(uri) for name, uri in config["candidates"].items()}
        local = {**job, "config": config, "model_path": resolve(job.get("model_path")), "work_dir": str(work),
                 "out_dir": str(work / "child-out"), "data": str(Path(inputs) / "input.jsonl"),
                 "rules_dir": str(Path(inputs) / "rules") if (Path(inputs) / "rules").is_dir() else None}
    return local


def publish_output(job: dict[str, Any], local: dict[str, Any]) -> None:
    if job.get("store"):
        from resources.checkpoint_store import checkpoint_store_from_uri

        checkpoint_store_from_uri(job["store"]).publish(local["out_dir"], f"{job['job_key']}/{OUTPUT}")


def _is_main_and_pipes() -> tuple[bool, bool]:
    from dagster_pipes import PipesEnvVarParamsLoader

    from srl_assets.training.processes import is_main_process

    return is_main_process(), PipesEnvVarParamsLoader().is_dagster_pipes_process()


def _pipes_extras() -> dict[str, Any]:
    """The Pipes extras, read without opening the message channel (ranks other than 0)."""
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader

    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data["extras"])


def main(argv: list[str] | None = None) -> int:
    from dagster_pipes import open_dagster_pipes

    from srl_assets.training.stages import run_stage

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", help="job spec JSON (default: the Dagster Pipes extras)")
    args = parser.parse_args(argv)
    # Under `accelerate launch` every rank runs this; only rank 0 talks to Dagster and writes the
    # summary (the trainers themselves save the model on the main process only).
    main_rank, under_pipes = _is_main_and_pipes()
    if under_pipes and main_rank:
        with open_dagster_pipes() as pipes:
            job = json.loads(Path(args.spec).read_text()) if args.spec else pipes.extras["job"]
            spec = localize(job)
            if job.get("store"):  # a previous attempt's partial output is never reused
                shutil.rmtree(spec["out_dir"], ignore_errors=True)
            summary = run_stage(spec, lambda row: pipes.log.info(json.dumps(row, default=str)))
            _write_summary(spec, summary)
            publish_output(job, spec)
            pipes.report_asset_materialization(metadata={
                "steps": summary.get("steps", 0),
                "stage": summary.get("stage"),
            })
        return 0
    if args.spec:
        job = json.loads(Path(args.spec).read_text())
    elif under_pipes:
        job = _pipes_extras()["job"]
    else:
        parser.error("--spec is required outside Dagster Pipes")
    spec = localize(job)
    # Every process logs the same (gathered) metrics: the main one prints them, the others stay quiet.
    summary = run_stage(spec, (lambda row: print(json.dumps(row, default=str), flush=True)) if main_rank
                        else (lambda row: None))
    if main_rank:
        _write_summary(spec, summary)
        publish_output(job, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
