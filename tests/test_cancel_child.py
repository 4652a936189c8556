"""A training child stops when its run is canceled, also when Dagster's interrupt never reaches the run
worker (a SIGINT that arrives between two steps can be dropped): the client watches the run's status."""

import os
import sys
import threading
import time

import dagster as dg

from resources.training import ChildProcessClient

CHILD_SLEEP_S = 90


def test_a_child_stops_when_its_run_is_canceled_without_a_signal(tmp_path):
    pid_file = tmp_path / "child.pid"
    command = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                     f"time.sleep({CHILD_SLEEP_S})"]

    @dg.asset
    def long_training(context: dg.AssetExecutionContext, client: ChildProcessClient):
        return client.run(context=context, command=command).get_results()

    with dg.instance_for_test() as instance:
        def cancel_when_the_child_runs():
            deadline = time.monotonic() + 60
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            # What the run launcher records on a cancel, without the signal to the run worker.
            instance.report_run_canceling(instance.get_runs()[0])

        canceler = threading.Thread(target=cancel_when_the_child_runs)
        canceler.start()
        start = time.monotonic()
        result = dg.materialize([long_training], instance=instance, resources={"client": ChildProcessClient()},
                                raise_on_error=False)
        waited = time.monotonic() - start
        canceler.join()
    assert not result.success
    assert waited < CHILD_SLEEP_S / 2, f"the step waited {waited:.0f} s for a child of a canceled run"
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, f"the child {pid} still runs"
