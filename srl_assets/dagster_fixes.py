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

Importing this module (``srl_assets.definitions`` does, so every run process of this code location
does) replaces that one method. ``is_fixed_upstream()`` tells when a Dagster upgrade makes the
patch unnecessary; the test suite checks both.
"""

from __future__ import annotations

import time
import warnings

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

_UPSTREAM = InstanceConcurrencyContext.interval_to_next_pending_claim_check


def interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
    """Seconds until the earliest pending pool claim is due for another check (0 when one is due)."""
    if not self._pending_claims or not self._pending_timeouts:
        return 0.0
    return max(0.0, min(self._pending_timeouts.values()) - time.time())


def is_fixed_upstream() -> bool:
    """Whether Dagster's own method already waits: a claim due in 5 s must give a positive interval."""
    probe = InstanceConcurrencyContext.__new__(InstanceConcurrencyContext)
    probe._pending_claims = {"step"}
    probe._pending_timeouts = {"step": time.time() + 5.0}
    return _UPSTREAM(probe) > 0


try:
    _needed = not is_fixed_upstream()
except AttributeError as exc:  # a Dagster whose class no longer looks like 1.13's: leave it alone
    _needed = False
    warnings.warn(f"srl_assets.dagster_fixes: Dagster's InstanceConcurrencyContext changed ({exc}); "
                  "pool waits are left as Dagster does them", stacklevel=1)
if _needed:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check
