"""How tasks, lore and steps are shown to the policy. One place, so SFT, SRL, RLVR and evaluation
all read the same text."""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def trim_lore(lore: str, k: int) -> str:
    """The first ``k`` retrieved passages (one per line in a lore block); k = 0 drops the lore."""
    return "\n".join(lore.splitlines()[:k]) if k > 0 else ""


def task_prompt(task_text: str, lore: str) -> str:
    """RLVR / evaluation prompt: the model writes the whole trajectory."""
    return f"Task: {task_text}\nLore:\n{lore}\nPlan:\n"


def step_prompt(task_text: str, lore: str, previous_steps: list[str], next_title: str | None) -> str:
    """SRL prompt: the model writes only the next step (after a think block)."""
    done = "\n".join(previous_steps) if previous_steps else "(none yet)"
    hint = f"\nNext step title: {next_title}" if next_title else ""
    return f"Task: {task_text}\nLore:\n{lore}\nSteps so far:\n{done}{hint}\nNext step:\n"


def think(text: str) -> str:
    return f"{THINK_OPEN}{text}{THINK_CLOSE}"


def strip_think(text: str) -> str:
    """Drop a leading ``<think>...</think>`` block, if any, so the verifier reads the steps."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN) and THINK_CLOSE in stripped:
        return stripped.split(THINK_CLOSE, 1)[1].lstrip("\n")
    return text
