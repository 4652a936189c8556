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
WAIT_S = 6.0  # how long the test keeps the waiter waiting once its run has started


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


def _wait_until(check, what, limit_s=120):
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_run_waiting_for_the_pool_slot_sleeps(tmp_path):
    """The holder keeps the slot until the test releases it, WAIT_S after the waiter's run started,
    so the waiter's wait does not depend on how long its process took to import (on a busy CI
    machine the imports once ate most of a fixed hold, leaving 1.6 s of wait beside ~0.45 s of the
    run's own CPU)."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")  # the project's pools: gpu limit 1
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    release = tmp_path / "release"
    script = [sys.executable, str(REPO / "tests" / "helpers" / "pool_job.py")]
    holder = subprocess.Popen([*script, "holder", str(release)], env=env, stdout=subprocess.PIPE, text=True)
    waiter = None
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            def slot_taken():
                assert holder.poll() is None, "the holder ended before taking the slot"
                return ("gpu" in instance.event_log_storage.get_concurrency_keys()
                        and instance.event_log_storage.get_concurrency_info("gpu").claimed_slots)

            _wait_until(slot_taken, "the holder never took the slot")
            waiter = subprocess.Popen([*script, "waiter", str(release)], env=env, stdout=subprocess.PIPE,
                                      text=True)

            def waiter_started():
                assert waiter.poll() is None, "the waiter ended without waiting"
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"name": "waiter"}))
                return bool(runs) and runs[0].status == dg.DagsterRunStatus.STARTED

            _wait_until(waiter_started, "the waiter's run never started")
            time.sleep(WAIT_S)
            release.touch()
        holder_out, _ = holder.communicate(timeout=300)
        waiter_out, _ = waiter.communicate(timeout=300)
    finally:
        release.touch()
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
    held = json.loads(holder_out.strip().splitlines()[-1])
    waited = json.loads(waiter_out.strip().splitlines()[-1])
    assert held["success"] and waited["success"]
    assert waited["wall_s"] > WAIT_S, "the waiter never had to wait: the test proves nothing"
    # Spinning costs about one CPU-second per second waited; sleeping costs a few checks (the run's
    # own bookkeeping is ~0.5 CPU-s on a busy 2-core machine, far below a quarter of WAIT_S).
    assert waited["cpu_s"] < 0.25 * waited["wall_s"], waited
