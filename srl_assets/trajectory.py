"""The expert-trajectory text format: numbered steps ``N. **Title** action``.

The last step of a complete trajectory is the final JSON spec (title ``Final spec``). Parsing is
strict and bounded: it returns errors instead of raising, because it also reads model output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

FINAL_TITLE = "Final spec"
STEP_RE = re.compile(r"^\s*(\d+)\.\s+\*\*(.+?)\*\*\s*(.*)$")
MAX_TRAJECTORY_CHARS = 20_000
MAX_JSON_DEPTH = 12


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    action: str

    @property
    def text(self) -> str:
        return format_step(self.number, self.title, self.action)


def format_step(number: int, title: str, action: str) -> str:
    return f"{number}. **{title}** {action}".rstrip()


def spec_to_json(spec: dict[str, Any]) -> str:
    """Canonical compact JSON (sorted keys) so identical specs give identical text."""
    return json.dumps(spec, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)


def render_trajectory(steps: list[tuple[str, str]], spec: dict[str, Any]) -> str:
    """Number the reasoning steps and append the final spec as the last step."""
    lines = [format_step(i, title, action) for i, (title, action) in enumerate(steps, start=1)]
    lines.append(format_step(len(steps) + 1, FINAL_TITLE, spec_to_json(spec)))
    return "\n".join(lines)


@dataclass
class ParsedTrajectory:
    steps: list[Step]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_trajectory(text: Any) -> ParsedTrajectory:
    """Split a trajectory into steps; every non-empty line must be a step, numbered 1..N."""
    if not isinstance(text, str):
        return ParsedTrajectory([], [f"trajectory must be text, got {type(text).__name__}"])
    if len(text) > MAX_TRAJECTORY_CHARS:
        return ParsedTrajectory([], [f"trajectory is {len(text)} characters, limit {MAX_TRAJECTORY_CHARS}"])
    steps: list[Step] = []
    errors: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = STEP_RE.match(line)
        if not m:
            errors.append(f"line is not a step `N. **Title** action`: {line[:60]!r}")
            continue
        number = int(m.group(1)) if len(m.group(1)) < 6 else -1
        steps.append(Step(number, m.group(2).strip(), m.group(3).strip()))
    if not steps:
        errors.append("no steps found")
    for expected, step in enumerate(steps, start=1):
        if step.number != expected:
            errors.append(f"step {expected} is numbered {step.number}")
            break
    if steps and steps[-1].title != FINAL_TITLE:
        errors.append(f"last step must be titled '{FINAL_TITLE}', got {steps[-1].title[:40]!r}")
    return ParsedTrajectory(steps, errors)


def json_depth_ok(text: str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Cheap bracket scan so that deeply nested input never reaches the recursive parser."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


def parse_spec(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse the final step's JSON spec: ``(spec, None)`` or ``(None, reason)``; never raises."""
    if len(text) > MAX_TRAJECTORY_CHARS:
        return None, "spec is too long"
    if not json_depth_ok(text):
        return None, f"spec nests deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return None, f"spec is not valid JSON: {str(exc)[:80]}"
    if not isinstance(value, dict):
        return None, f"spec must be a JSON object, got {type(value).__name__}"
    return value, None
