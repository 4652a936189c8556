"""`make demo`: run the whole pipeline for every model type on the embedded default and print the
held-out verifier pass rates of the base, SRL and RLVR checkpoints.

Runs are recorded in the Dagster instance under $DAGSTER_HOME, so `make ui` shows them, with their
lineage, metadata and asset checks. ``--config`` takes a run-config preset from ``configs/``.
"""

from __future__ import annotations

import argparse
import sys
import time

import dagster as dg
import yaml


def main(argv: list[str] | None = None) -> int:
    from srl_assets.definitions import defs
    from srl_assets.domains import MODEL_TYPES
    from srl_assets.settings import duckdb_path
    from resources.duckdb_store import DuckDBStore

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-types", nargs="*", default=list(MODEL_TYPES), choices=MODEL_TYPES)
    parser.add_argument("--config", help="run-config YAML preset (see configs/)")
    args = parser.parse_args(argv)
    run_config = yaml.safe_load(open(args.config)) if args.config else {}

    job = defs.get_job_def("srl_pipeline")
    instance = dg.DagsterInstance.get()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for model_type in args.model_types:
        t0 = time.perf_counter()
        print(f"[demo] {model_type}: materializing the pipeline ...", flush=True)
        result = job.execute_in_process(partition_key=model_type, instance=instance, run_config=run_config,
                                        raise_on_error=False, tags={"srl/trigger": "demo"})
        timings[model_type] = time.perf_counter() - t0
        if not result.success:
            print(f"[demo] {model_type}: run {result.run_id} FAILED; see `make ui` for its logs", file=sys.stderr)
            return 1
        print(f"[demo] {model_type}: done in {timings[model_type]:.0f} s (run {result.run_id})", flush=True)
    total = time.perf_counter() - started

    store = DuckDBStore(database=duckdb_path())
    history = store.read("performance_history")
    lines = ["| model type | base | SRL | RLVR | RLVR - base | eval tasks | pipeline time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    beats = 0
    for model_type in args.model_types:
        rows = history[history.model_type == model_type]
        latest = rows[rows.report_id == rows.sort_values("created_at").report_id.iloc[-1]].set_index("candidate")
        rate = {c: float(latest.loc[c, "pass_rate"]) for c in ("base", "srl", "rlvr")}
        beats += rate["rlvr"] > rate["base"]
        lines.append(f"| {model_type} | {rate['base']:.3f} | {rate['srl']:.3f} | {rate['rlvr']:.3f} | "
                     f"{rate['rlvr'] - rate['base']:+.3f} | {int(latest.loc['rlvr', 'n'])} | {timings[model_type]:.0f} |")
    print("\nHeld-out verifier pass rate (greedy decoding, fresh eval tasks):\n")
    print("\n".join(lines))
    print(f"\nRLVR beats base in {beats} of {len(args.model_types)} model types; "
          f"pipeline time {total / 60:.1f} min. Browse it all with `make ui`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
