"""The SRL step reward: format checks, exact 2M/T similarities, and the TRL reward contract."""

import doctest

import pytest

from srl_assets.srl import step_reward as step_reward_module
from srl_assets.srl.step_reward import (
    MAX_CHARS,
    format_violation,
    make_step_reward_fn,
    parse_step_completion,
    sequence_similarity,
    step_reward,
)


def ok(step: str) -> str:
    """A well-formed completion writing `step`."""
    return f"<think>reasoning</think>\n{step}"


# (case, a, b, expected 2M/T)
SIMILARITY_CASES = [
    ("identical", "abcd", "abcd", 1.0),  # M=4, T=8
    ("one char differs", "abcd", "abce", 0.75),  # M=3 "abc", T=8
    ("nothing in common", "abc", "xyz", 0.0),  # M=0
    ("prefix", "abc", "abcdef", 2 * 3 / 9),  # M=3, T=9
    ("two blocks", "abXcd", "abYcd", 2 * 4 / 10),  # "ab" + "cd": M=4, T=10
    ("both empty", "", "", 1.0),  # difflib defines 0/0 as 1.0
    ("one empty", "", "abc", 0.0),
]


@pytest.mark.parametrize("case,a,b,expected", SIMILARITY_CASES)
def test_sequence_similarity_exact(case, a, b, expected):
    assert sequence_similarity(a, b) == pytest.approx(expected, abs=1e-12), case


# (case, completion, reason fragment) — every one scores -1.0
VIOLATIONS = [
    ("no think", "1. **Plan** do it", "missing <think>"),
    ("unclosed think", "<think>hmm\n1. **Plan** do it", "unclosed"),
    ("text before think", "Sure! <think>x</think>\n1. **Plan** do it", "before <think>"),
    ("nested think", "<think>a<think>b</think></think>\n1. **P** x", "more than one <think>"),
    ("two think blocks", "<think>a</think><think>b</think>\n1. **P** x", "more than one <think>"),
    ("stray close", "<think>a</think>\n1. **Plan** do it</think>", "more than one </think>"),
    ("two steps", "<think>a</think>\n1. **Plan** x\n2. **Next** y", "2 step lines"),
    ("no step", "<think>a</think>\nI would plant a tree.", "no step line"),
    ("empty after think", "<think>a</think>", "no step line"),
    ("step inside think only", "<think>1. **Plan** x</think>\n", "no step line"),
    ("title not bold", "<think>a</think>\n1. Plan do it", "no step line"),
    ("text before step", "<think>a</think>\nHere:\n1. **Plan** x", "between </think>"),
]


@pytest.mark.parametrize("case,completion,reason", VIOLATIONS)
def test_format_violations_score_minus_one(case, completion, reason):
    assert reason in format_violation(completion), case
    assert parse_step_completion(completion) is None, case
    assert step_reward(completion, "1. **Plan** do it") == -1.0, case


# (case, completion, expert step, expected reward)
REWARDS = [
    ("exact match", ok("1. **Plan** abcd"), "1. **Plan** abcd", 1.0),
    # "1. **Plan** abcd" vs "1. **Plan** abce": 16 chars each, M = 15 -> 30/32
    ("last char differs", ok("1. **Plan** abcd"), "1. **Plan** abce", 30 / 32),
    ("whitespace stripped", "  <think>t</think>\n\n  3. **A** x  \n", " 3. **A** x\n", 1.0),
    # "1. **A** x" vs "2. **A** x": M = 9, T = 20
    ("step number counts", ok("1. **A** x"), "2. **A** x", 18 / 20),
    ("leading whitespace before think ok", "\n <think></think>1. **A** x", "1. **A** x", 1.0),
    ("multi-line action kept", ok('4. **Spec**\n{"a": 1}'), '4. **Spec**\n{"a": 1}', 1.0),
]


@pytest.mark.parametrize("case,completion,expert,expected", REWARDS)
def test_step_reward(case, completion, expert, expected):
    assert format_violation(completion) is None, case
    assert step_reward(completion, expert) == pytest.approx(expected, abs=1e-12), case


def test_parsed_step_fields():
    step = parse_step_completion("<think> why </think>\n2. **Crown shape** round, wide")
    assert (step.think, step.number, step.title, step.action) == (
        "why",
        2,
        "Crown shape",
        "round, wide",
    )
    assert step.text == "2. **Crown shape** round, wide"


def test_thinking_is_not_compared():
    expert = "1. **Plan** abcd"
    short = step_reward(ok(expert), expert)
    long = step_reward("<think>" + "z" * 500 + "</think>\n" + expert, expert)
    assert short == long == 1.0


def test_symmetric_on_long_pair_with_autojunk_off():
    # 300 characters each: with difflib's default autojunk the common letters would be junked.
    a = "1. **Plan** place the oak tree near the river bank, " * 6
    b = "1. **Plan** place an oak tree by the river banks, " * 6
    a, b = a[:300], b[:300]
    assert len(a) == len(b) == 300
    assert sequence_similarity(a, b) == sequence_similarity(b, a)
    assert sequence_similarity(a, b) > 0.8


def test_inputs_truncated_for_bounded_cost():
    expert = "1. **Plan** " + "a" * (MAX_CHARS - 12)
    # Everything past MAX_CHARS is ignored on both sides.
    assert step_reward(ok(expert + "zzzz" * 5000), expert + "yyy") == 1.0
    with pytest.raises(ValueError, match="max_chars"):
        step_reward(ok(expert), expert, max_chars=0)


def test_reward_fn_reads_target_column_and_chat_messages():
    fn = make_step_reward_fn()
    assert fn.__name__ == "step_reward"
    completions = [
        ok("1. **Plan** abcd"),  # plain string
        [{"role": "assistant", "content": ok("1. **Plan** abcd")}],  # conversational
        [{"role": "assistant", "content": "1. **Plan** abcd"}],  # no think block
    ]
    targets = ["1. **Plan** abce", "1. **Plan** abcd", "1. **Plan** abcd"]
    rewards = fn(["p"] * 3, completions, target=targets, other_column=[1, 2, 3])
    assert rewards == [pytest.approx(30 / 32), 1.0, -1.0]


def test_reward_fn_errors_are_loud():
    fn = make_step_reward_fn()
    with pytest.raises(ValueError, match="'target'"):
        fn(["p"], [ok("1. **A** x")], answer=["1. **A** x"])
    with pytest.raises(ValueError, match="rows"):
        fn(["p", "p"], [ok("1. **A** x")] * 2, target=["1. **A** x"])


def test_doctests():
    assert doctest.testmod(step_reward_module).failed == 0
