"""What a run waiting for the `gpu` pool costs: several partitions of `srl_pipeline` started at once.

Each partition runs in its own process (as a UI backfill or the sensors start them) on a throwaway
Dagster instance with the project's dagster.yaml (gpu pool: one slot), with the test suite's tiny
run config. ``--unpatched`` puts back Dagster 1.13's own ``interval_to_next_pending_claim_check``
(see srl_assets/dagster_fixes.py), under which a waiting run polls without sleeping. Not a test:
minutes per run.

    .venv/bin/python benchmarks/pool_wait.py                # with the fix
    .venv/bin/python benchmarks/pool_wait.py --unpatched    # Dagster as shipped

The last line is JSON: total wall time, and per partition its run's wall time and the CPU time its
run process spent (the training itself runs in Pipes children and is not counted there).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def worker(model_type: str, sft_steps: int, unpatched: bool) -> None:
    import dagster as dg
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    from srl_assets import dagster_fixes
    from srl_assets.definitions import defs

    if unpatched:
        if dagster_fixes._UPSTREAM is None:
            raise SystemExit("dagster_fixes found no Dagster method to restore (see its warning)")
        InstanceConcurrencyContext.interval_to_next_pending_claim_check = dagster_fixes._UPSTREAM
    sys.path.insert(0, str(REPO / "tests"))  # the test module imports its helpers package from there
    config = json.loads(json.dumps(runpy.run_path(str(REPO / "tests" / "test_pipeline_assets.py"))["RUN_CONFIG"]))
    config["ops"]["base_model"]["config"]["sft_steps"] = sft_steps
    wall, cpu = time.monotonic(), time.process_time()
    result = defs.get_job_def("srl_pipeline").execute_in_process(
        partition_key=model_type, instance=dg.DagsterInstance.get(), run_config=config, raise_on_error=False)
    print(json.dumps({"model_type": model_type, "success": result.success, "wall_s": round(time.monotonic() - wall, 1),
                      "run_process_cpu_s": round(time.process_time() - cpu, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-types", nargs="+", default=["plant", "tree", "animal"])
    parser.add_argument("--sft-steps", type=int, default=200, help="Base-model SFT steps (the training load).")
    parser.add_argument("--unpatched", action="store_true", help="Dagster's own (spinning) wait.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.sft_steps, args.unpatched)
        return
    with tempfile.TemporaryDirectory(prefix="pool_wait_") as home:
        shutil.copy(REPO / "dagster.yaml", Path(home) / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": home, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
               "PYTHONPATH": str(REPO)}
        # Create the instance's storage once: processes creating a new SQLite instance at the same
        # moment can race on its schema.
        subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"], env=env, check=True,
                       capture_output=True)
        started = time.monotonic()
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", m, "--sft-steps", str(args.sft_steps),
                                   *(["--unpatched"] if args.unpatched else [])],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for m in args.model_types]
        runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        total = time.monotonic() - started
    for run in runs:
        print(f"{run['model_type']}: success={run['success']} wall {run['wall_s']} s, "
              f"run process CPU {run['run_process_cpu_s']} s")
    print(json.dumps({"unpatched": args.unpatched, "total_wall_s": round(total, 1), "runs": runs}))


if __name__ == "__main__":
    main()
