"""A run waiting for the `gpu` pool's slot sleeps between checks instead of spinning a core
(srl_assets/dagster_fixes.py): two real run processes on one instance, the second waits."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

import srl_assets.definitions  # noqa: F401
from srl_assets import dagster_fixes

REPO = Path(__file__).resolve().parent.parent
HOLD_S = 5.0


def test_the_code_location_installs_a_waiting_interval():
    assert InstanceConcurrencyContext.interval_to_next_pending_claim_check is \
        dagster_fixes.interval_to_next_pending_claim_check or dagster_fixes.is_fixed_upstream()
    probe = InstanceConcurrencyContext.__new__(InstanceConcurrencyContext)
    probe._pending_claims, probe._pending_timeouts = {"a", "b"}, {"a": time.time() + 3, "b": time.time() + 9}
    assert 2.5 < probe.interval_to_next_pending_claim_check() <= 3.0  # the earliest due check
    probe._pending_timeouts = {"a": time.time() - 1, "b": time.time() + 9}
    assert probe.interval_to_next_pending_claim_check() == 0.0  # one is due: check at once
    probe._pending_claims = set()
    assert probe.interval_to_next_pending_claim_check() == 0.0


def test_a_run_waiting_for_the_pool_slot_sleeps(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")  # the project's pools: gpu limit 1
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    script = [sys.executable, str(REPO / "tests" / "helpers" / "pool_job.py")]
    holder = subprocess.Popen([*script, "holder", str(HOLD_S)], env=env, stdout=subprocess.PIPE, text=True)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        deadline = time.monotonic() + 120
        while not ("gpu" in instance.event_log_storage.get_concurrency_keys()
                   and instance.event_log_storage.get_concurrency_info("gpu").claimed_slots):
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never took the slot"
            time.sleep(0.1)
    waiter = subprocess.run([*script, "waiter", "0"], env=env, capture_output=True, text=True, timeout=300)
    holder_out, _ = holder.communicate(timeout=300)
    held = json.loads(holder_out.strip().splitlines()[-1])
    waited = json.loads(waiter.stdout.strip().splitlines()[-1])
    assert held["success"] and waited["success"]
    assert waited["wall_s"] > 1.0, "the waiter never had to wait: the test proves nothing"
    # Spinning costs about one CPU-second per second waited; sleeping costs a few checks.
    assert waited["cpu_s"] < 0.25 * waited["wall_s"], waited
