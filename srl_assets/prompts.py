"""How tasks, lore and steps are shown to the policy. One place, so SFT, SRL, RLVR and evaluation
all read the same text."""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Tokens a whole trajectory may take when the policy writes it: evaluation, RLVR's rollouts, the recipe
# comparison, paid evaluation and serving default to it. The tiny default's expert trajectories reach 344 tokens
# (with EOS) under a demo's tokenizer: building's median is 289 and 33 of its 240 are over 320, the budget until
# 2026-12-04, which cut about a tenth of building's held-out answers off inside the final JSON (on the bases of one
# demo: 79 -> 89 of 200 passed at 400, RLVR 100 -> 110; docs/experiments.md). The performance report's
# `generation_budget_fits_experts` check measures the stored expert trajectories against its budget.
TRAJECTORY_MAX_NEW_TOKENS = 384


def trim_lore(lore: str, k: int) -> str:
    """The first ``k`` retrieved passages (one per line in a lore block); k = 0 drops the lore."""
    return "\n".join(lore.splitlines()[:k]) if k > 0 else ""


def task_prompt(task_text: str, lore: str) -> str:
    """RLVR / evaluation prompt: the model writes the whole trajectory."""
    return f"Task: {task_text}\nLore:\n{lore}\nPlan:\n"


def step_prompt(task_text: str, lore: str, previous_steps: list[str], next_title: str | None) -> str:
    """SRL prompt: the evaluation prompt followed by the expert's steps 1..k-1, one per line, so the
    policy continues with step k exactly as it would inside a whole trajectory. With ``next_title``
    the prompt ends with step k's number and title (the paper's hint) and the policy writes the rest.

    >>> step_prompt("t", "", ["1. **A** a"], None)
    'Task: t\\nLore:\\n\\nPlan:\\n1. **A** a\\n'
    >>> step_prompt("t", "", [], "Start")
    'Task: t\\nLore:\\n\\nPlan:\\n1. **Start**'
    """
    done = "".join(f"{step}\n" for step in previous_steps)
    hint = f"{len(previous_steps) + 1}. **{next_title}**" if next_title else ""
    return task_prompt(task_text, lore) + done + hint


def think(text: str) -> str:
    return f"{THINK_OPEN}{text}{THINK_CLOSE}"


def strip_think(text: str) -> str:
    """Drop a leading ``<think>...</think>`` block, if any, so the verifier reads the steps."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN) and THINK_CLOSE in stripped:
        return stripped.split(THINK_CLOSE, 1)[1].lstrip("\n")
    return text
