"""Progress rows for long trainer runs: ``{"event": "progress", "step", "total", "what"}``.

The child forwards them through its reporter (Dagster Pipes log lines), and ``make demo`` draws a
progress bar from them (``srl_assets/progress.py``). At most ``updates`` + 1 rows per run, so a
1,000-step warm start adds ~20 lines to the run's event log rather than 1,000.
"""

from __future__ import annotations

from typing import Any, Callable

from transformers import TrainerCallback


class TrainerProgress(TrainerCallback):
    def __init__(self, report: Callable[[dict[str, Any]], None], what: str = "steps", updates: int = 20):
        if updates < 1:
            raise ValueError(f"updates must be >= 1, got {updates}")
        self.report = report
        self.what = what
        self.updates = updates
        self._last_bucket = -1

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        step, total = state.global_step, max(int(state.max_steps), 1)
        bucket = step * self.updates // total
        if bucket > self._last_bucket or step >= total:
            self._last_bucket = bucket
            self.report({"event": "progress", "step": step, "total": total, "what": self.what})
        return control
