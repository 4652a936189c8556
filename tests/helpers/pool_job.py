"""One run of a one-op job in the ``gpu`` pool, on the instance in $DAGSTER_HOME.

``python pool_job.py NAME RELEASE_FILE``: once the op has the pool's slot it holds it until
RELEASE_FILE exists (at most 120 s); the last stdout line is JSON with the run's wall time and the
CPU time this process spent in it.
"""

import json
import sys
import time
from pathlib import Path

import dagster as dg

import srl_assets.definitions  # noqa: F401  (what every run process of the code location imports)


@dg.op(pool="gpu")
def hold_the_slot() -> None:
    release, deadline = Path(sys.argv[2]), time.monotonic() + 120
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.05)


@dg.job(executor_def=dg.in_process_executor)
def pool_job():
    hold_the_slot()


if __name__ == "__main__":
    wall, cpu = time.monotonic(), time.process_time()
    result = pool_job.execute_in_process(instance=dg.DagsterInstance.get(), tags={"name": sys.argv[1]})
    print(json.dumps({"name": sys.argv[1], "success": result.success, "run_id": result.run_id,
                      "wall_s": time.monotonic() - wall, "cpu_s": time.process_time() - cpu}))
