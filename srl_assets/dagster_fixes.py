"""A fix for one Dagster bug that matters here: an op waiting for a pool slot spins a CPU core.

Every training op runs in the ``gpu`` pool (one slot), so when several partitions are materialized
at once (a backfill from the UI, or the sensors asking for several retraining runs) all but one of
the runs wait for the slot. Each run executes its steps in one process, and Dagster 1.13's
in-process executor asks ``InstanceConcurrencyContext.interval_to_next_pending_claim_check()`` how
long to sleep before it asks the pool again; that method returns ``min([0, *seconds_left])``, which
is never positive, so the waiting run never sleeps: it polls in a tight loop and takes a whole core
from the training op it is waiting for (measured on this 2-core machine: a run that waited 4.9 s for
the slot used 4.8 s of CPU; five waiting runs beside two training children held each child to
about a third of a core). Dagster's own back-off (1 s, growing
by 10 % per check up to 15 s) is already computed per waiting step; the method only has to return
the time left until the earliest of those checks. Upstream saw it (dagster-io/dagster PR #20367,
closed without merging); 1.13.27 still has it.

Why no supported configuration replaces it (checked against 1.13.27's run queue): with
``concurrency.pools.granularity: op`` (ours), the QueuedRunCoordinator daemon holds back a queued
run only while the pools of its *first* steps are full (``rules`` has none), so a second
partition's run is dequeued, reaches ``base_model`` and waits for the ``gpu`` slot in its own
process, spinning. ``granularity: run`` would keep it in the queue (no process, no CPU), but then
every ``srl_pipeline`` run holds the ``gpu`` pool for its whole length (partitions no longer overlap
their CPU-bound data assets with another's training), and in-process executions (``make demo``,
``dagster asset materialize``, the tests) get no pool limit at all, since only the queue enforces
run granularity. So the patch stays.

Importing this module (``srl_assets.definitions`` does, so every run process of this code location
does) replaces that one method. ``is_fixed_upstream()`` tells when a Dagster upgrade makes the
patch unnecessary; the test suite checks both. ``INSTALLED`` says whether it is in place.
"""

from __future__ import annotations

import time
import warnings


def interval_to_next_pending_claim_check(self) -> float:
    """Seconds until the earliest pending pool claim is due for another check (0 when one is due)."""
    if not self._pending_claims or not self._pending_timeouts:
        return 0.0
    return max(0.0, min(self._pending_timeouts.values()) - time.time())


def _probe_upstream(method) -> float:
    """Dagster's own method on a claim due in 5 s (positive once upstream waits)."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    probe = InstanceConcurrencyContext.__new__(InstanceConcurrencyContext)
    probe._pending_claims = {"step"}
    probe._pending_timeouts = {"step": time.time() + 5.0}
    return method(probe)


def is_fixed_upstream() -> bool:
    """Whether Dagster's own method already waits: a claim due in 5 s must give a positive interval."""
    return _UPSTREAM is not None and _probe_upstream(_UPSTREAM) > 0


def _install():
    """Patch the method when Dagster still spins; return Dagster's own method (None: not found).

    Dagster internals move between releases: whatever about them differs from 1.13 (the module, the
    class, the method, the private attributes the probe sets) switches the patch off with a warning;
    loading the code location never fails because of it."""
    global INSTALLED
    try:
        from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

        upstream = InstanceConcurrencyContext.interval_to_next_pending_claim_check
        needed = _probe_upstream(upstream) <= 0
    except Exception as exc:  # noqa: BLE001 - any change of Dagster's internals: leave them alone
        warnings.warn(f"srl_assets.dagster_fixes: Dagster's InstanceConcurrencyContext changed "
                      f"({type(exc).__name__}: {exc}); pool waits are left as Dagster does them", stacklevel=2)
        return None
    if needed:
        InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check
        INSTALLED = True
    return upstream


INSTALLED = False
_UPSTREAM = _install()
