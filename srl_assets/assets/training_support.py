"""Shared wiring of the training assets: launch the child through Dagster Pipes, publish checkpoints
(and prune old ones), find the checkpoint an upstream materialization produced, and draw reward
curves for the materialization metadata."""

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
from srl_assets.assets.lineage import Upstream, materializations, upstream
from srl_assets.training import retention
from srl_assets.training.stages import write_rows

CHECKPOINTS_TABLE = "checkpoints"

# glibc malloc hands the freed memory of every step's large tensors back to the kernel and faults it in
# again on the next step (half the CPU time went to the kernel); keeping it in the heap made SFT steps
# ~30% faster and sampling ~25% faster on the 2-core default (README, Runtime choices). A value already
# in the environment wins. 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def child_env(wandb: WandbResource) -> dict[str, str]:
    """What a training child's environment adds to the Pipes client's: offline Hugging Face, unbuffered output,
    the allocator settings (a value already in the environment wins) and the wandb run's variables."""
    return {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1", **{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}, **wandb.run_env()}


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
    env = child_env(wandb)
    context.log.info(f"{stage}/{model_type}: child in {work_dir}")
    if training.job_store_uri:  # self-contained: the job travels in the extras, files through the store
        job = training.portable_job(spec, rules_dir)
        invocation = pipes.run(command=training.command(stage, config), context=context, extras={"job": job}, env=env)
        training.collect_output(job, out_dir)
    else:
        invocation = pipes.run(command=[*training.command(stage, config), "--spec", str(work_dir / "spec.json")],
                               context=context, extras={"job": spec}, env=env)
    child = invocation.get_materialize_result()
    summary = json.loads((out_dir / "summary.json").read_text())
    return summary, dict(child.metadata or {}), out_dir, work_dir


def publish_checkpoint(context: dg.AssetExecutionContext, store: CheckpointStore, duckdb: DuckDBStore,
                       stage: str, out_dir: Path, summary: dict[str, Any],
                       training: TrainingResource | None = None) -> tuple[str, CheckpointInfo]:
    """Publish atomically, record it in the checkpoint catalog (DuckDB), prune old ones; (key, info)."""
    model_type = context.partition_key
    (out_dir / "metrics.json").write_text(json.dumps(summary.get("log", []), default=str))
    key = f"{stage}/{model_type}/{context.run.run_id}"
    info = store.publish(str(out_dir), key)
    duckdb.append(CHECKPOINTS_TABLE, pd.DataFrame([{
        "model_type": model_type, "stage": stage, "key": key, "uri": info.uri, "sha256": info.sha256,
        "size_bytes": info.size_bytes, "run_id": context.run.run_id,
        "created_at": datetime.now(timezone.utc).isoformat()}]))
    prune_checkpoints(context, store, duckdb, stage, training)
    return key, info


# Assets whose latest materialization names checkpoints (metadata ``checkpoints``: {stage: {key, sha256}})
# that must outlive retention: what the current report evaluated and the current selection routes to.
NAMING_ASSETS = ("performance_report", "model_selection")
# And the checkpoint each training asset's current materialization published (what its downstream consumes).
CHECKPOINT_ASSETS = ("base_model", "srl_checkpoint", "rlvr_checkpoint")


def protected_checkpoints(instance: dg.DagsterInstance, model_type: str) -> set[str]:
    """Keys and sha256 digests that the current report, the current selection or a pin names."""
    names = set(retention.pinned(model_type))
    for asset in NAMING_ASSETS:
        for mat in materializations(instance, asset, model_type):
            for ref in (mat.get("checkpoints") or {}).values():
                names.update(v for v in (ref.get("key"), ref.get("sha256")) if v)
    for asset in CHECKPOINT_ASSETS:
        for mat in materializations(instance, asset, model_type):
            names.update(v for v in (mat.get("checkpoint_key"), mat.get("sha256")) if v)
    return names


def prune_checkpoints(context: dg.AssetExecutionContext, store: CheckpointStore, duckdb: DuckDBStore,
                      stage: str, training: TrainingResource | None = None) -> list[str]:
    """Keep the newest ``SRL_KEEP_CHECKPOINTS`` of (stage, partition) and everything still named;
    delete the rest from the store and the catalog, and old work folders and fetched copies."""
    model_type, keep = context.partition_key, retention.keep_count()
    if keep == 0:
        return []
    catalog = duckdb.read(CHECKPOINTS_TABLE, model_type, "stage = ?", [stage])
    published = [retention.Published(r.key, r.sha256, str(r.created_at)) for r in catalog.itertuples()]
    doomed = retention.to_delete(published, keep, protected_checkpoints(context.instance, model_type))
    for p in doomed:
        store.delete(p.key)
    if doomed:
        with duckdb.connect() as conn:
            conn.execute(f"DELETE FROM {CHECKPOINTS_TABLE} WHERE model_type = ? AND stage = ? AND key IN "
                         f"({', '.join('?' * len(doomed))})", [model_type, stage, *(p.key for p in doomed)])
        context.log.info(f"retention: deleted {len(doomed)} {stage} checkpoint(s) of {model_type}: "
                         + ", ".join(p.key for p in doomed))
    if training is not None:
        root = Path(training.work_root)
        retention.prune_work_folders(root, stage, model_type, keep)
        deleted = {p.sha256 for p in doomed}
        retention.prune_fetched(root, {p.sha256 for p in published} - deleted, deleted)
    return [p.key for p in doomed]


def upstream_checkpoint(context: dg.AssetExecutionContext, duckdb: DuckDBStore, asset: str,
                        stage: str) -> tuple[dict[str, Any], Upstream]:
    """The checkpoint that the upstream ``asset``'s materialization of this partition published:
    its key and manifest sha256 come from that materialization, never from the newest catalog row."""
    up = upstream(context, asset)
    sha = up.get("sha256")
    if not sha:
        raise LookupError(f"{asset}[{context.partition_key}] (run {up.run_id}) names no checkpoint: rematerialize it")
    key = up.get("checkpoint_key")
    if not key:  # written before materializations named their key: the catalog row with exactly this digest
        rows = duckdb.read(CHECKPOINTS_TABLE, context.partition_key, "stage = ? AND sha256 = ?", [stage, sha])
        if rows.empty:
            raise LookupError(f"{asset}[{context.partition_key}]: checkpoint {sha[:12]} is not in the catalog "
                              "(deleted by retention?): rematerialize it")
        key = str(rows.key.iloc[0])
    return {"key": key, "sha256": sha, "uri": up.get("uri")}, up


def latest_checkpoint(duckdb: DuckDBStore, stage: str, model_type: str) -> dict[str, Any]:
    """The newest catalog row of a stage: for benchmarks and tools only. Assets consume the checkpoint
    their upstream materialization names (``upstream_checkpoint``)."""
    if not duckdb.table_exists(CHECKPOINTS_TABLE):
        raise LookupError(f"no checkpoint catalog yet: materialize {stage} for {model_type} first")
    df = duckdb.read(CHECKPOINTS_TABLE, model_type, "stage = ?", [stage])
    if df.empty:
        raise LookupError(f"no {stage} checkpoint for {model_type}: materialize it first")
    return df.sort_values("created_at").iloc[-1].to_dict()


def fetch_checkpoint(store: CheckpointStore, training: TrainingResource, row: dict[str, Any],
                     local: bool = False) -> str:
    """A local copy of a published checkpoint (cached by content hash, verified on fetch); with a job
    store, its URI (the self-contained child fetches it itself) unless ``local`` (this process reads it)."""
    if training.job_store_uri and not local:
        return store.uri(row["key"])
    dest = Path(training.work_root) / "fetched" / row["sha256"][:16]
    if not (dest / "config.json").exists():
        stored = store.info(row["key"]).sha256
        if stored != row["sha256"]:
            raise RuntimeError(f"checkpoint {row['key']} holds {stored[:12]}, not the {row['sha256'][:12]} that "
                               "its materialization published")
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


def checkpoint_metadata(key: str, info: CheckpointInfo, summary: dict[str, Any]) -> dict[str, Any]:
    history = summary.get("raw_reward_history") or []
    return {
        "checkpoint_key": key,
        "uri": dg.MetadataValue.url(info.uri) if info.uri.startswith("s3://") else dg.MetadataValue.path(info.uri),
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "steps": int(summary.get("steps", 0)),
        "final_mean_reward": float(history[-1]) if history else float("nan"),
        "resumed_from": str(summary.get("resumed_from") or ""),
    }
