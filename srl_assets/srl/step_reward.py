"""The SRL step reward: how closely the one step the policy writes matches the expert's next step.

SRL (Deng et al., 2025, arXiv 2510.25992) asks the policy, given the task and the expert's steps
1..k-1, to think freely and then write step k. The completion format is::

    <think>free reasoning</think>
    N. **Title** action

The reward is the `difflib.SequenceMatcher` ratio 2M/T between the step the model wrote and the
expert's step k (M: characters in matching blocks, T: both lengths together), and -1.0 when the
completion breaks the format, so a malformed answer always scores below any well-formed one
(the worst well-formed score is 0.0).

Only the step is compared, never the thinking: the paper rewards the action and leaves the
reasoning free.

>>> step_reward("<think>plant near water</think>\\n1. **Site** oak by river",
...             "1. **Site** oak by river")
1.0
>>> step_reward("1. **Site** oak by river", "1. **Site** oak by river")  # no think block
-1.0
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from srl_assets.prompts import THINK_CLOSE, THINK_OPEN
from srl_assets.trajectory import STEP_RE as STEP_LINE  # one step-line format for the whole project

FORMAT_VIOLATION_REWARD = -1.0

# SequenceMatcher with autojunk off is quadratic in the worst case. Measured on one CPU core:
# two 4,000-character strings of a few repeated letters take about 1 s, two 2,000-character ones
# about 0.3 s. A GRPO batch scores dozens of completions per step, so one run-away completion must
# not cost seconds: both sides are cut to MAX_CHARS before matching. Expert steps are far shorter,
# so a truncated comparison only ever concerns text that is already badly off.
MAX_CHARS = 2_000


@dataclass(frozen=True)
class ParsedStep:
    """A well-formed SRL completion, split into its parts.

    `text` is the whole step (the `N. **Title** action` line and any continuation lines, such as a
    pretty-printed JSON spec in the last step), stripped: the string the reward compares.
    """

    think: str
    number: int
    title: str
    action: str
    text: str


def _parse(text: str) -> tuple[ParsedStep | None, str | None]:
    """Parse a completion; return (step, None) or (None, reason for the format violation)."""
    head, sep, rest = text.partition(THINK_OPEN)
    if not sep:
        return None, "missing <think>"
    if head.strip():
        return None, "text before <think>"
    if THINK_OPEN in rest:
        return None, "more than one <think>"
    think, sep, after = rest.partition(THINK_CLOSE)
    if not sep:
        return None, "unclosed <think> (missing </think>)"
    if THINK_CLOSE in after:
        return None, "more than one </think>"

    lines = after.strip().splitlines()
    step_lines = [i for i, line in enumerate(lines) if STEP_LINE.match(line)]
    if not step_lines:
        return None, "no step line `N. **Title** action` after </think>"
    if len(step_lines) > 1:
        return None, f"{len(step_lines)} step lines after </think>; exactly one is allowed"
    if step_lines[0] != 0:
        return None, "text between </think> and the step line"

    match = STEP_LINE.match(lines[0])
    assert match is not None  # guaranteed by step_lines above
    # Continuation lines belong to the action: the final step is often a multi-line JSON spec.
    action = "\n".join([match.group(3), *lines[1:]]).strip()
    step = ParsedStep(
        think=think.strip(),
        number=int(match.group(1)),
        title=match.group(2).strip(),
        action=action,
        text="\n".join(lines).strip(),
    )
    return step, None


def parse_step_completion(text: str) -> ParsedStep | None:
    """Return the parsed step of a well-formed completion, or None (see `format_violation`).

    >>> parse_step_completion("<think>x</think>\\n2. **Shape** round crown").title
    'Shape'
    """
    return _parse(text)[0]


def format_violation(text: str) -> str | None:
    """Return a short reason why `text` breaks the SRL step format, or None when it is well-formed.

    >>> format_violation("<think>a</think>\\n1. **A** x\\n2. **B** y")
    '2 step lines after </think>; exactly one is allowed'
    >>> format_violation("<think>a</think>\\n1. **A** x") is None
    True
    """
    return _parse(text)[1]


def sequence_similarity(a: str, b: str) -> float:
    """`difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()`: 2M/T in [0, 1].

    autojunk is off on purpose. With it on (difflib's default), once the second string has 200+
    characters every character that makes up more than 1% of it is treated as junk and never
    matched, so long steps score far lower and the score depends on which string comes second:

    >>> a, b = "ab" * 60, "ba" * 120
    >>> difflib.SequenceMatcher(None, a, b).ratio(), difflib.SequenceMatcher(None, b, a).ratio()
    (0.0, 0.6666666666666666)
    >>> sequence_similarity(a, b), sequence_similarity(b, a)
    (0.6666666666666666, 0.6666666666666666)

    The matcher stays greedy, so on rare ties the ratio can still depend on argument order;
    `step_reward` therefore always passes (model step, expert step) in that order.

    >>> sequence_similarity("abcd", "abce")  # M = 3 ("abc"), T = 8
    0.75
    """
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def step_reward(completion: str, expert_step: str, max_chars: int = MAX_CHARS) -> float:
    """Reward one completion against the expert's step: -1.0 on a format violation, else 2M/T.

    Both sides are stripped and cut to `max_chars` characters (see MAX_CHARS: bounded cost).

    >>> step_reward("<think>t</think>\\n1. **Plan** abcd", "1. **Plan** abce")  # M=15, T=32
    0.9375
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    step = parse_step_completion(completion)
    if step is None:
        return FORMAT_VIOLATION_REWARD
    return sequence_similarity(step.text[:max_chars], expert_step.strip()[:max_chars])


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The text of a completion as TRL passes it: a string, or a list of chat messages.

    For a conversational completion (`[{"role": "assistant", "content": ...}]`) the content of
    the last message is the model's answer.
    """
    if isinstance(completion, str):
        return completion
    if not completion:
        raise ValueError("empty conversational completion: expected at least one message")
    content = completion[-1]["content"]
    if not isinstance(content, str):
        raise ValueError(f"message content must be a string, got {type(content).__name__}")
    return content


def make_step_reward_fn(max_chars: int = MAX_CHARS) -> Callable[..., list[float]]:
    """A TRL reward function scoring each completion against the dataset column `target`.

    TRL calls reward functions as `fn(prompts=..., completions=..., **columns)`, where each
    remaining dataset column arrives as a list aligned with the completions; the step dataset
    keeps the expert's step k in `target`.

    >>> fn = make_step_reward_fn()
    >>> fn(["p", "p"],
    ...    ["<think>t</think>\\n1. **Plan** abcd", [{"role": "assistant", "content": "no think"}]],
    ...    target=["1. **Plan** abce", "1. **Plan** abce"])
    [0.9375, -1.0]
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")

    def step_reward_fn(
        prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        if "target" not in kwargs:
            raise ValueError(
                "step reward needs the dataset column 'target' (the expert's step); "
                f"got columns {sorted(kwargs)}"
            )
        targets = kwargs["target"]
        if len(targets) != len(completions):
            raise ValueError(
                f"'target' has {len(targets)} rows but there are {len(completions)} completions"
            )
        return [
            step_reward(completion_text(c), t, max_chars) for c, t in zip(completions, targets)
        ]

    # TRL names the logged reward column after the function.
    step_reward_fn.__name__ = "step_reward"
    return step_reward_fn
