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

Which comparison scores the step is a registered variant (`STEP_REWARDS`), each
`fn(step_text, expert_step) -> float in [0, 1]` on the step text alone:

* ``difflib`` -- the paper's 2M/T on characters (above).
* ``tokens`` -- the same 2M/T over word and number tokens, so one wrong number or name costs a
  whole token rather than a character or two.
* ``field`` -- what the step states: for a JSON spec step, the fraction of keys whose value is
  exactly right (missing and extra keys count wrong); for a text step, the F1 of its numbers times
  the F1 of its content words, both times the title's agreement.

On long structured steps the character ratio barely moves for a wrong value (0.995 on average for
one wrong number in the final spec, against 0.881 with ``field``); `benchmarks/step_reward_separation.py`
measures every registered reward on real expert trajectories (docs/step_rewards.md).

The policy may also write the step without a think block (the step prompt is then the evaluation
prompt plus the expert's earlier steps): `score_step` scores that bare step line.

>>> step_reward("<think>plant near water</think>\\n1. **Site** oak by river",
...             "1. **Site** oak by river")
1.0
>>> step_reward("1. **Site** oak by river", "1. **Site** oak by river")  # no think block
-1.0
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from srl_assets.prompts import THINK_CLOSE, THINK_OPEN
from srl_assets.registry import Registry
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


StepReward = Callable[[str, str], float]
STEP_REWARDS: Registry[StepReward] = Registry("step reward")
DEFAULT_STEP_REWARD = "difflib"


def step_reward_names() -> list[str]:
    """The registered step-reward names, sorted."""
    return STEP_REWARDS.names()


@STEP_REWARDS.register("difflib")
def difflib_reward(step_text: str, expert_step: str) -> float:
    """The paper's reward: 2M/T on characters, both sides stripped and cut to MAX_CHARS.

    >>> difflib_reward("1. **Plan** abcd", "1. **Plan** abce")  # M=15, T=32
    0.9375
    """
    return sequence_similarity(step_text.strip()[:MAX_CHARS], expert_step.strip()[:MAX_CHARS])


# A number keeps its sign and decimals ("-15", "0.43"; "20-35" is 20 and 35); a word is a run of
# letters, digits and "_" ("AU12", "sugar_maple"). Case is ignored: "Clay" and "clay" are one word.
_TOKEN_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)|\w+")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")

# Function words carry no fact a verifier checks; a right step may phrase them differently.
# Deliberately small and generic (no domain word, no negation, no verb like "use" or "take").
_STOPWORDS = frozenset(
    "a an the and or of to in on at by for with from into is are be its it this that these those "
    "so thus then as each every which".split()
)


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.casefold())


@STEP_REWARDS.register("tokens")
def token_reward(step_text: str, expert_step: str) -> float:
    """2M/T over word and number tokens (case ignored) instead of characters.

    >>> token_reward("3. **Soil** Clay soil, pH 6.5.", "3. **Soil** clay soil; pH 7.0")  # 6 tokens, 5 agree
    0.8333333333333334
    """
    a, b = _tokens(step_text[:MAX_CHARS]), _tokens(expert_step[:MAX_CHARS])
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


@dataclass(frozen=True)
class _Header:
    number: int
    title: str
    action: str


def _split_step(text: str) -> _Header | None:
    """`N. **Title** action` (continuation lines belong to the action), or None."""
    lines = text.strip().splitlines()
    match = STEP_LINE.match(lines[0]) if lines else None
    if match is None:
        return None
    action = "\n".join([match.group(3), *lines[1:]]).strip()
    return _Header(int(match.group(1)), match.group(2).strip(), action)


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _same_value(a: Any, b: Any) -> bool:
    """Exact agreement; numbers compare by value (27 == 27.0), containers element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def key_agreement(got: dict[str, Any], expert: dict[str, Any]) -> float:
    """Keys whose value is exactly the expert's, over the expert's keys plus any extra ones.

    >>> key_agreement({"a": 1, "b": 2.0, "c": "x"}, {"a": 1, "b": 2, "c": "y", "d": 4})  # 2 of 4
    0.5
    >>> key_agreement({"a": 1, "z": 0}, {"a": 1})  # one extra key: 1 of 2
    0.5
    """
    if not expert and not got:
        return 1.0
    right = sum(1 for key, value in expert.items() if key in got and _same_value(got[key], value))
    extra = sum(1 for key in got if key not in expert)
    return right / (len(expert) + extra)


def _f1(got: Counter[Any], expert: Counter[Any]) -> float:
    if not got and not expert:
        return 1.0
    common = sum((got & expert).values())
    if not common:
        return 0.0
    return 2 * common / (sum(got.values()) + sum(expert.values()))


def _facts(text: str) -> tuple[Counter[float], Counter[str]]:
    """The numbers (by value) and the content words (function words dropped) of a text."""
    numbers: Counter[float] = Counter()
    words: Counter[str] = Counter()
    for token in _tokens(text):
        if _NUMBER_RE.fullmatch(token):
            numbers[float(token)] += 1
        elif token not in _STOPWORDS:
            words[token] += 1
    return numbers, words


def fact_agreement(action: str, expert_action: str) -> float:
    """F1 of the numbers times F1 of the content words of two text actions.

    The product makes a wrong number cost what it matters: one wrong number of three takes a third
    off the score, where the character ratio moves by about 1% (docs/step_rewards.md).

    >>> fact_agreement("Sandy soil has pH 5.5 to 7.5; use 6.5.", "Sandy soil has pH 5.5 to 7.5; use 6.5")
    1.0
    >>> round(fact_agreement("Sandy soil has pH 5.5 to 7.5; use 7.0.", "Sandy soil has pH 5.5 to 7.5; use 6.5"), 4)
    0.6667
    """
    numbers, words = _facts(action)
    expert_numbers, expert_words = _facts(expert_action)
    return _f1(numbers, expert_numbers) * _f1(words, expert_words)


@STEP_REWARDS.register("field")
def field_reward(step_text: str, expert_step: str) -> float:
    """What the step states, compared field by field; 0.0 when the step number differs.

    * JSON spec step (the expert's action is a JSON object): `key_agreement` of the two objects;
      an action that is not a JSON object scores 0.0 (the lowest well-formed score, never -1).
    * Text step: `fact_agreement` (numbers F1 x content-word F1).

    Both are multiplied by the agreement of the titles (F1 of their words, case ignored).

    >>> expert = '6. **Final spec** {"biome": "desert", "height_m": 2.75, "soil": "sandy"}'
    >>> field_reward('6. **Final spec** {"soil": "sandy", "height_m": 2.75, "biome": "desert"}', expert)
    1.0
    >>> round(field_reward('6. **Final spec** {"biome": "tundra", "height_m": 2.75, "soil": "sandy"}', expert), 4)
    0.6667
    >>> field_reward('6. **Final spec** {"biome": "desert", "height_m"', expert)  # not JSON
    0.0
    """
    expert = _split_step(expert_step[:MAX_CHARS])
    if expert is None:
        raise ValueError(f"the expert step is not a step line `N. **Title** action`: {expert_step[:80]!r}")
    step = _split_step(step_text[:MAX_CHARS])
    if step is None or step.number != expert.number:
        return 0.0
    title = _f1(Counter(_tokens(step.title)), Counter(_tokens(expert.title)))
    expert_spec = _json_object(expert.action)
    if expert_spec is not None:
        spec = _json_object(step.action)
        return 0.0 if spec is None else title * key_agreement(spec, expert_spec)
    return title * fact_agreement(step.action, expert.action)


def get_step_reward(name: str) -> StepReward:
    """The step reward registered as `name`; an unknown name lists the known ones."""
    return STEP_REWARDS.get(name)


def step_reward(
    completion: str, expert_step: str, max_chars: int = MAX_CHARS, reward: str = DEFAULT_STEP_REWARD
) -> float:
    """Reward one think-format completion: -1.0 on a format violation, else the `reward` score.

    Both sides are stripped and cut to `max_chars` characters (see MAX_CHARS: bounded cost).

    >>> step_reward("<think>t</think>\\n1. **Plan** abcd", "1. **Plan** abce")  # M=15, T=32
    0.9375
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    fn = get_step_reward(reward)
    step = parse_step_completion(completion)
    if step is None:
        return FORMAT_VIOLATION_REWARD
    return fn(step.text[:max_chars], expert_step.strip()[:max_chars])


def step_text_violation(step_text: str, expert_step: str) -> str | None:
    """Why a bare step (no think block) breaks the format, or None when it is one step line
    `N. **Title** action` numbered as the expert's step.

    >>> step_text_violation("2. **Soil** clay", "3. **Soil** clay")
    'step number 2, expected 3'
    """
    expert = _split_step(expert_step)
    if expert is None:
        raise ValueError(f"the expert step is not a step line `N. **Title** action`: {expert_step[:80]!r}")
    text = step_text.strip()
    if not text:
        return "empty step"
    if "\n" in text:
        return "more than one line; a step is one line `N. **Title** action`"
    match = STEP_LINE.match(text)
    if match is None:
        return "not a step line `N. **Title** action`"
    if int(match.group(1)) != expert.number:
        return f"step number {int(match.group(1))}, expected {expert.number}"
    return None


def score_step(
    step_text: str, expert_step: str, reward: str = DEFAULT_STEP_REWARD, max_chars: int = MAX_CHARS
) -> float:
    """Reward a bare step line written without a think block: -1.0 when it is not a single step
    line or its number is not the expert's, else the `reward` score in [0, 1].

    >>> score_step("3. **Soil** clay", "3. **Soil** clay")
    1.0
    >>> score_step("<think>x</think> 3. **Soil** clay", "3. **Soil** clay")
    -1.0
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    fn = get_step_reward(reward)
    if step_text_violation(step_text, expert_step) is not None:
        return FORMAT_VIOLATION_REWARD
    return fn(step_text.strip()[:max_chars], expert_step.strip()[:max_chars])

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


def make_step_reward_fn(
    max_chars: int = MAX_CHARS, reward: str = DEFAULT_STEP_REWARD, think: bool = True
) -> Callable[..., list[float]]:
    """A TRL reward function scoring each completion against the dataset column `target`.

    TRL calls reward functions as `fn(prompts=..., completions=..., **columns)`, where each
    remaining dataset column arrives as a list aligned with the completions; the step dataset
    keeps the expert's step k in `target`. `reward` names the registered comparison
    (`STEP_REWARDS`); `think=True` expects `<think>...</think>` before the step (`step_reward`),
    `think=False` a bare step line (`score_step`).

    >>> fn = make_step_reward_fn()
    >>> fn(["p", "p"],
    ...    ["<think>t</think>\\n1. **Plan** abcd", [{"role": "assistant", "content": "no think"}]],
    ...    target=["1. **Plan** abce", "1. **Plan** abce"])
    [0.9375, -1.0]
    >>> make_step_reward_fn(reward="field", think=False)(["p"], ["1. **Plan** abcd"], target=["1. **Plan** abcd"])
    [1.0]
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    get_step_reward(reward)  # an unknown name fails here, not at the first training step

    def score(completion: str, target: str) -> float:
        if think:
            return step_reward(completion, target, max_chars, reward)
        return score_step(completion, target, reward, max_chars)

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
        return [score(completion_text(c), t) for c, t in zip(completions, targets)]

    # TRL names the logged reward column after the function.
    step_reward_fn.__name__ = "step_reward"
    return step_reward_fn
