"""`make demo`: run the whole pipeline for every model type on the embedded default and print the
held-out verifier pass rates of the base, SRL and RLVR checkpoints.

Runs are recorded in the Dagster instance under $DAGSTER_HOME, so `make ui` shows them, with their
lineage, metadata, asset checks and full logs. ``--config`` takes a run-config preset from ``configs/``.

The console shows one line per model type and stage (a bar for stages that report their steps) and
the final table. Everything else — Dagster's log lines, the training children's stdout and stderr
(TRL's per-step losses, warnings) — goes to the run's logs, where the UI shows it (the run's event
log, and its captured stdout/stderr), and to ``$DAGSTER_HOME/logs/demo-<time>.log``; ``--verbose``
puts it back on the console.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
import yaml

from srl_assets.progress import ConsoleProgress


@contextmanager
def quiet_console(log_path: Path) -> Iterator[TextIO]:
    """Point this process's stdout and stderr (file descriptors 1 and 2) at ``log_path`` and yield a
    stream to the original console.

    At the descriptor level, not ``sys.stdout``: the training children inherit descriptors 1 and 2
    from this process, and Dagster's compute-log capture tees them into the run's stdout/stderr
    logs, so the trainers' output still reaches the UI; it just no longer reaches the terminal.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        console.close()


def _json_row(message: str | None) -> dict[str, Any] | None:
    """A training child's metrics row (it logs each as one JSON object), else None."""
    if not message or not message.lstrip().startswith("{"):
        return None
    try:
        row = json.loads(message)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


class RunEvents:
    """Turns one run's Dagster events into ConsoleProgress calls, as the instance stores them."""

    def __init__(self, progress: ConsoleProgress):
        self.progress = progress
        # A training child's own exception, by step: the step's failure only says "External
        # execution process failed with code 1".
        self.child_errors: dict[str, str | None] = {}

    def __call__(self, entry: dg.EventLogEntry) -> None:
        event, step = entry.dagster_event, entry.step_key
        if step is None:
            return
        if event is None:
            row = _json_row(entry.user_message)
            if row and row.get("event") == "progress":
                self.progress.stage_progress(step, int(row["step"]), int(row["total"]), str(row.get("what", "steps")))
            return
        kind = event.event_type
        if kind in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED):
            self.progress.stage_started(step)
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            self.progress.stage_finished(step, ok=True)
        elif kind == dg.DagsterEventType.ENGINE_EVENT and getattr(event.event_specific_data, "error", None):
            self.child_errors[step] = _first_line(event.engine_event_data.error)
        elif kind == dg.DagsterEventType.STEP_UP_FOR_RETRY:  # the training assets' RetryPolicy
            error = self.child_errors.pop(step, None) or _first_line(event.step_retry_data.error)
            self.progress.stage_finished(step, ok=False, error=error, retrying=True)
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            error = self.child_errors.pop(step, None) or _first_line(
                event.step_failure_data.error if event.step_failure_data else None)
            self.progress.stage_finished(step, ok=False, error=error)


def _first_line(error: Any) -> str | None:
    """The first line of a step's error (its full traceback stays in the run's logs). Dagster wraps
    the asset's own exception ("Error occurred while executing op ..."): show the one it wraps."""
    if error is None:
        return None
    while error.cause is not None:
        error = error.cause
    return (error.message.strip().splitlines() or [""])[0]


def run_partition(job: dg.JobDefinition, instance: dg.DagsterInstance, model_type: str,
                  run_config: dict[str, Any], progress: ConsoleProgress,
                  asset_selection: list[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    """One run of ``job`` for a partition, its stages drawn on ``progress`` as they happen."""
    run_id = str(uuid.uuid4())
    # The instance calls its listeners for every event it stores, in this thread: no polling.
    instance.add_event_listener(run_id, RunEvents(progress))
    return job.execute_in_process(partition_key=model_type, instance=instance, run_config=run_config,
                                  raise_on_error=False, tags={"srl/trigger": "demo"}, run_id=run_id,
                                  asset_selection=asset_selection)


def run_each(job_name: str, name: str, model_types: list[str], run_config: dict[str, Any], verbose: bool,
             asset_selection: list[dg.AssetKey] | None = None) -> dict[str, tuple[float, str]] | None:
    """One run of ``job_name`` per model type, one after another, drawn on the console (everything else
    goes to ``$DAGSTER_HOME/logs/<name>-<time>.log``); {model type: (seconds, run id)}, or None once a
    run failed (the console says where its logs are)."""
    from srl_assets.settings import dagster_home

    log_path = dagster_home() / "logs" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.log"
    runs: dict[str, tuple[float, str]] = {}
    with _console(log_path, verbose) as console:
        # Loaded here so that what the code location prints while loading goes to the log too.
        from srl_assets.definitions import defs

        job = defs.resolve_job_def(job_name)
        instance = dg.DagsterInstance.get()
        progress = ConsoleProgress(console)
        progress.message(f"[{name}] {', '.join(model_types)}: one run each. Full logs: `make ui` (a run's "
                         f"event log and stdout/stderr) and {log_path}")
        for i, model_type in enumerate(model_types, 1):
            progress.run_started(model_type, i, len(model_types))
            t0 = time.perf_counter()
            result = run_partition(job, instance, model_type, run_config, progress, asset_selection)
            runs[model_type] = (time.perf_counter() - t0, result.run_id)
            progress.run_finished(model_type, runs[model_type][0], result.success, result.run_id)
            if not result.success:
                progress.message(f"[{name}] {model_type} failed: the run's logs are in `make ui` (Runs → "
                                 f"{result.run_id}) and in {log_path}")
                return None
    return runs


def pass_rate_table(model_types: list[str], timings: dict[str, float]) -> tuple[list[str], int]:
    """The Markdown table of the latest report's pass rates per model type; and how many RLVR wins."""
    from resources.duckdb_store import DuckDBStore
    from srl_assets.settings import duckdb_path

    history = DuckDBStore(database=duckdb_path()).read("performance_history")
    lines = ["| model type | base | SRL | RLVR | RLVR - base | eval tasks | pipeline time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    beats = 0
    for model_type in model_types:
        rows = history[history.model_type == model_type]
        latest = rows[rows.report_id == rows.sort_values("created_at").report_id.iloc[-1]].set_index("candidate")
        rate = {c: float(latest.loc[c, "pass_rate"]) for c in ("base", "srl", "rlvr")}
        beats += rate["rlvr"] > rate["base"]
        lines.append(f"| {model_type} | {rate['base']:.3f} | {rate['srl']:.3f} | {rate['rlvr']:.3f} | "
                     f"{rate['rlvr'] - rate['base']:+.3f} | {int(latest.loc['rlvr', 'n'])} | {timings[model_type]:.0f} |")
    return lines, beats


def main(argv: list[str] | None = None) -> int:
    from srl_assets.domains import MODEL_TYPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-types", nargs="*", default=list(MODEL_TYPES), choices=MODEL_TYPES)
    parser.add_argument("--config", help="run-config YAML preset (see configs/)")
    parser.add_argument("--assets", nargs="*", metavar="ASSET",
                        help="materialize only these assets of srl_pipeline (default: all; the table "
                             "needs performance_report)")
    parser.add_argument("--verbose", action="store_true",
                        help="print every log line of Dagster and the trainers on the console too")
    args = parser.parse_args(argv)
    with open(args.config) if args.config else open(os.devnull) as fh:
        run_config = yaml.safe_load(fh) or {}
    selection = [dg.AssetKey(a) for a in args.assets] if args.assets else None

    started = time.perf_counter()
    runs = run_each("srl_pipeline", "demo", args.model_types, run_config, args.verbose, selection)
    if runs is None:
        return 1
    timings = {model_type: seconds for model_type, (seconds, _) in runs.items()}
    total = time.perf_counter() - started
    if selection is not None and dg.AssetKey("performance_report") not in selection:
        print(f"\nMaterialized {', '.join(args.assets)} in {total / 60:.1f} min. Browse it all with `make ui`.")
        return 0
    lines, beats = pass_rate_table(args.model_types, timings)
    print("\nHeld-out verifier pass rate (greedy decoding, fresh eval tasks):\n")
    print("\n".join(lines))
    print(f"\nRLVR beats base in {beats} of {len(args.model_types)} model types; "
          f"pipeline time {total / 60:.1f} min. Browse it all with `make ui`.")
    return 0


@contextmanager
def _console(log_path: Path, verbose: bool) -> Iterator[TextIO]:
    if verbose:
        yield sys.stdout
    else:
        with quiet_console(log_path) as console:
            yield console


if __name__ == "__main__":
    sys.exit(main())
