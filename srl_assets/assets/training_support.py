"""Shared wiring of the training assets: launch the child through Dagster Pipes, publish and look
up checkpoints, and draw reward curves for the materialization metadata."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from resources.checkpoint_store import CheckpointInfo, CheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from srl_assets.training.stages import write_rows

CHECKPOINTS_TABLE = "checkpoints"

# glibc malloc hands the freed memory of every step's large tensors back to the kernel and faults it in
# again on the next step (half the CPU time went to the kernel); keeping it in the heap made SFT steps
# ~30% faster and sampling ~25% faster on the 2-core default (README, Runtime choices). A value already
# in the environment wins. 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def run_child(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient, training: TrainingResource,
              wandb: WandbResource, stage: str, rows: list[dict[str, Any]], config: dict[str, Any],
              identity: dict[str, Any], model_path: str | None = None,
              rules_dir: str | None = None) -> tuple[dict[str, Any], dict[str, Any], Path, Path]:
    """Run one training stage in a child process; returns (summary, child metadata, out, work)."""
    model_type = context.partition_key
    work_dir = training.work_dir(stage, model_type, {**identity, "config": config, "model": model_path})
    out_dir = work_dir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)  # a previous attempt's partial output is never reused
    work_dir.mkdir(parents=True, exist_ok=True)
    write_rows(work_dir / "input.jsonl", rows)
    report_to = [] if wandb.mode == "disabled" or stage in ("rollouts", "evaluate") else ["wandb"]
    spec = {"stage": stage, "model_type": model_type, "rules_dir": rules_dir, "work_dir": str(work_dir),
            "out_dir": str(out_dir), "data": str(work_dir / "input.jsonl"), "config": config,
            "model_path": model_path, "report_to": report_to}
    (work_dir / "spec.json").write_text(json.dumps(spec))
    env = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1", **{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}, **wandb.run_env()}
    context.log.info(f"{stage}/{model_type}: child in {work_dir}")
    invocation = pipes.run(command=[*training.command(stage, config), "--spec", str(work_dir / "spec.json")],
                           context=context, extras={"job": spec}, env=env)
    child = invocation.get_materialize_result()
    summary = json.loads((out_dir / "summary.json").read_text())
    return summary, dict(child.metadata or {}), out_dir, work_dir


def publish_checkpoint(context: dg.AssetExecutionContext, store: CheckpointStore, duckdb: DuckDBStore,
                       stage: str, out_dir: Path, summary: dict[str, Any]) -> CheckpointInfo:
    """Publish atomically and record it in the checkpoint catalog (DuckDB)."""
    model_type = context.partition_key
    (out_dir / "metrics.json").write_text(json.dumps(summary.get("log", []), default=str))
    key = f"{stage}/{model_type}/{context.run.run_id}"
    info = store.publish(str(out_dir), key)
    duckdb.append(CHECKPOINTS_TABLE, pd.DataFrame([{
        "model_type": model_type, "stage": stage, "key": key, "uri": info.uri, "sha256": info.sha256,
        "size_bytes": info.size_bytes, "run_id": context.run.run_id,
        "created_at": datetime.now(timezone.utc).isoformat()}]))
    return info


def latest_checkpoint(duckdb: DuckDBStore, stage: str, model_type: str) -> dict[str, Any]:
    if not duckdb.table_exists(CHECKPOINTS_TABLE):
        raise LookupError(f"no checkpoint catalog yet: materialize {stage} for {model_type} first")
    df = duckdb.read(CHECKPOINTS_TABLE, model_type, "stage = ?", [stage])
    if df.empty:
        raise LookupError(f"no {stage} checkpoint for {model_type}: materialize it first")
    return df.sort_values("created_at").iloc[-1].to_dict()


def fetch_checkpoint(store: CheckpointStore, training: TrainingResource, row: dict[str, Any]) -> str:
    """A local copy of a published checkpoint (cached by content hash, verified on fetch)."""
    dest = Path(training.work_root) / "fetched" / row["sha256"][:16]
    if not (dest / "config.json").exists():
        shutil.rmtree(dest, ignore_errors=True)
        store.fetch(row["key"], str(dest))
    return str(dest)


def png_markdown(path: str | Path, title: str) -> dg.MetadataValue:
    """A PNG embedded as Markdown, so the Dagster UI shows it with the materialization."""
    import base64

    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def reward_curve(summary: dict[str, Any], label: str, work_dir: Path, title: str) -> dg.MetadataValue:
    """The per-step mean raw reward of a training summary, as a plot."""
    log = [{"step": i + 1, label: v} for i, v in enumerate(summary["raw_reward_history"])]
    return curve_plot(log, [label], work_dir / "reward.png", title)


def curve_plot(log: list[dict[str, Any]], keys: list[str], path: Path, title: str) -> dg.MetadataValue:
    """A PNG of training curves, embedded as Markdown so the Dagster UI shows it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for key in keys:
        points = [(row["step"], row[key]) for row in log if key in row]
        if points:
            ax.plot(*zip(*points), marker=".", label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return png_markdown(path, title)


def checkpoint_metadata(info: CheckpointInfo, summary: dict[str, Any]) -> dict[str, Any]:
    history = summary.get("raw_reward_history") or []
    return {
        "uri": dg.MetadataValue.url(info.uri) if info.uri.startswith("s3://") else dg.MetadataValue.path(info.uri),
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "steps": int(summary.get("steps", 0)),
        "final_mean_reward": float(history[-1]) if history else float("nan"),
        "resumed_from": str(summary.get("resumed_from") or ""),
    }
