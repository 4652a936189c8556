"""What ``make demo`` shows on the console: one line per model type and stage, a bar for stages that
report their steps. No Dagster here: ``srl_assets/demo.py`` turns the run's events into these calls.

On a terminal the running stage's line is redrawn in place; anywhere else (a pipe, a CI log) each
stage prints its bar at 25/50/75% and a closing line, so the output stays a few dozen lines long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

MILESTONES = (0.25, 0.5, 0.75)


def bar(done: int, total: int, width: int = 24) -> str:
    """``[######------]`` for ``done`` of ``total``.

    >>> bar(1, 4, width=8)
    '[##------]'
    """
    filled = min(width, done * width // max(total, 1))
    return f"[{'#' * filled}{'-' * (width - filled)}]"


@dataclass
class _Stage:
    name: str
    started: float
    step: int = 0
    total: int = 0
    what: str = "steps"
    printed: set[float] = field(default_factory=set)


class ConsoleProgress:
    def __init__(self, stream: TextIO, live: bool | None = None, name_width: int = 20):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.name_width = name_width
        self._stage: _Stage | None = None
        self._drawn = False  # a live line is on screen without its newline

    # -- runs -------------------------------------------------------------------------------
    def run_started(self, model_type: str, index: int, count: int) -> None:
        self._line(f"{model_type} ({index}/{count})")

    def run_finished(self, model_type: str, seconds: float, ok: bool, run_id: str) -> None:
        verdict = "done" if ok else "FAILED"
        self._line(f"{model_type}: {verdict} in {seconds:.0f} s (run {run_id})")

    # -- stages -----------------------------------------------------------------------------
    def stage_started(self, name: str) -> None:
        self._stage = _Stage(name, time.monotonic())
        if self.live:
            self._draw(f"  {name:<{self.name_width}} running")

    def stage_progress(self, name: str, step: int, total: int, what: str = "steps") -> None:
        stage = self._stage if self._stage and self._stage.name == name else None
        if stage is None:
            self.stage_started(name)
            stage = self._stage
        stage.step, stage.total, stage.what = step, max(total, 1), what
        text = (f"  {name:<{self.name_width}} {bar(step, stage.total)} {step}/{stage.total} {what}"
                f"  {time.monotonic() - stage.started:.0f} s")
        if self.live:
            self._draw(text)
            return
        reached = [m for m in MILESTONES if step / stage.total >= m and m not in stage.printed]
        if reached:
            stage.printed.update(reached)
            self._line(text)

    def stage_finished(self, name: str, ok: bool, error: str | None = None, retrying: bool = False) -> None:
        stage = self._stage if self._stage and self._stage.name == name else _Stage(name, time.monotonic())
        seconds = time.monotonic() - stage.started
        detail = f" ({stage.step} {stage.what})" if stage.total else ""
        if ok:
            self._line(f"  {name:<{self.name_width}} done in {seconds:.1f} s{detail}")
        else:
            verdict = "failed, retrying," if retrying else "FAILED"
            self._line(f"  {name:<{self.name_width}} {verdict} after {seconds:.1f} s: {error or 'see the run logs'}")
        self._stage = None

    def message(self, text: str) -> None:
        self._line(text)

    # -- output -----------------------------------------------------------------------------
    def _draw(self, text: str) -> None:
        self.stream.write("\r\x1b[2K" + text)  # carriage return + clear the line
        self.stream.flush()
        self._drawn = True

    def _line(self, text: str) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
