"""The SRL step reward: format checks, exact 2M/T similarities, the registered step rewards, the bare
step format (`score_step`) and the TRL reward contract."""

import doctest
import json

import pytest

from srl_assets.srl import step_reward as step_reward_module
from srl_assets.srl.step_reward import (
    MAX_CHARS,
    STEP_REWARDS,
    format_violation,
    make_step_reward_fn,
    parse_step_completion,
    score_step,
    sequence_similarity,
    step_reward,
    step_text_violation,
)
from srl_assets.trajectory import spec_to_json


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


# ---- registered step rewards (fn(step_text, expert_step) -> [0, 1]) ----------------------------


def test_registry_holds_the_paper_reward_and_the_alternatives():
    assert STEP_REWARDS.names() == ["difflib", "field", "tokens"]
    assert all(STEP_REWARDS.get(name)("1. **A** x", "1. **A** x") == 1.0 for name in STEP_REWARDS.names())


@pytest.mark.parametrize("case,a,b,expected", SIMILARITY_CASES)
def test_difflib_reward_is_the_papers_2m_over_t(case, a, b, expected):
    assert STEP_REWARDS.get("difflib")(a, b) == pytest.approx(expected, abs=1e-12), case


def test_difflib_reward_truncates_at_max_chars():
    long = "1. **A** " + "a" * MAX_CHARS
    assert STEP_REWARDS.get("difflib")(long + "zzz", long + "yyy") == 1.0


def test_unknown_reward_names_the_known_ones():
    for call in (lambda: step_reward(ok("1. **A** x"), "1. **A** x", reward="bleu"),
                 lambda: score_step("1. **A** x", "1. **A** x", reward="bleu"),
                 lambda: make_step_reward_fn(reward="bleu")):  # fails when built, not at the first step
        with pytest.raises(ValueError, match=r"unknown step reward 'bleu'.*'difflib', 'field', 'tokens'"):
            call()


# (case, step, expert, expected): tokens = 2M/T over lower-cased word and number tokens
TOKEN_CASES = [
    ("same", "1. **A** x y", "1. **A** x y", 1.0),
    ("one token differs", "1. **A** x y", "1. **A** x z", 6 / 8),  # [1,a,x,y] vs [1,a,x,z]
    ("case and punctuation ignored", "1. **Soil** Clay; pH 6.5.", "1. **soil** clay, ph 6.5", 1.0),
    ("a number is one token", "1. **A** 0.43 m", "1. **A** 0.45 m", 6 / 8),  # [1,a,0.43,m]
]


@pytest.mark.parametrize("case,step,expert,expected", TOKEN_CASES)
def test_tokens_reward(case, step, expert, expected):
    assert STEP_REWARDS.get("tokens")(step, expert) == pytest.approx(expected, abs=1e-12), case


SOIL = "3. **Soil** Sandy soil has pH 5.5 to 7.5; use 6.5."
# (case, step, expert, expected): field on a text step = title F1 x numbers F1 x content-word F1
FIELD_TEXT_CASES = [
    ("copy", SOIL, SOIL, 1.0),
    ("function words, case, punctuation", "3. **Soil** sandy soil has pH 5.5 to 7.5, thus use 6.5", SOIL, 1.0),
    ("1 of 3 numbers wrong", SOIL.replace("6.5", "7.0"), SOIL, 2 / 3),  # numbers F1 2*2/6
    ("6.5 and 6.50 are one number", SOIL.replace("6.5", "6.50"), SOIL, 1.0),
    # content words {sandy, soil, has, ph, use}: one swapped -> F1 = 2*4/10
    ("one content word wrong", SOIL.replace("Sandy", "Clay"), SOIL, 0.8),
    ("a number dropped", "3. **Soil** Sandy soil has pH 5.5 to 7.5; use it.", SOIL, 0.8),  # 2*2/5; "it" ignored
    ("title half right", "3. **Soil pH** Sandy soil has pH 5.5 to 7.5; use 6.5.", SOIL, 2 / 3),
    ("step number differs", SOIL.replace("3.", "4.", 1), SOIL, 0.0),
    ("not a step line", "Sandy soil has pH 5.5 to 7.5; use 6.5.", SOIL, 0.0),
]


@pytest.mark.parametrize("case,step,expert,expected", FIELD_TEXT_CASES)
def test_field_reward_on_text_steps(case, step, expert, expected):
    assert STEP_REWARDS.get("field")(step, expert) == pytest.approx(expected, abs=1e-12), case


PLANT_SPEC = {"biome": "desert", "edibility": "edible", "family": "agavaceae", "flowering_season": "summer",
              "growth_form": "shrub", "height_m": 2.75, "name": "desert agavaceae shrub", "rainfall_mm": [0, 250],
              "rarity": "legendary", "soil": "sandy", "soil_ph": 6.5, "spawn_weight": 0.03,
              "temperature_c": [10, 45]}  # a real expert's final spec: 13 keys


def spec_step(spec, number=6):
    return f"{number}. **Final spec** {spec_to_json(spec)}"


EXPERT_SPEC = spec_step(PLANT_SPEC)
# (case, step, expected): field on the JSON spec step = keys exactly right / (expert keys + extra keys)
FIELD_JSON_CASES = [
    ("copy", EXPERT_SPEC, 1.0),
    ("keys reordered, compact", "6. **Final spec** " + json.dumps(dict(reversed(PLANT_SPEC.items())),
                                                                 separators=(",", ":")), 1.0),
    ("one wrong category", spec_step({**PLANT_SPEC, "biome": "tundra"}), 12 / 13),
    ("one wrong number", spec_step({**PLANT_SPEC, "soil_ph": 6.6}), 12 / 13),
    ("2.75 vs 2.750 and 45 vs 45.0", spec_step({**PLANT_SPEC, "temperature_c": [10, 45.0]}), 1.0),
    ("one list element wrong", spec_step({**PLANT_SPEC, "rainfall_mm": [0, 251]}), 12 / 13),
    ("true is not 1", spec_step({**PLANT_SPEC, "soil_ph": True}), 12 / 13),
    ("one key missing", spec_step({k: v for k, v in PLANT_SPEC.items() if k != "rarity"}), 12 / 13),
    ("one extra key", spec_step({**PLANT_SPEC, "colour": "red"}), 13 / 14),
    ("unparseable JSON: lowest well-formed score", EXPERT_SPEC[:-20], 0.0),
    ("JSON but not an object", "6. **Final spec** [1, 2]", 0.0),
    ("wrong title", spec_step(PLANT_SPEC).replace("Final spec", "Spec"), 2 / 3),  # title F1 2*1/3
]


@pytest.mark.parametrize("case,step,expected", FIELD_JSON_CASES)
def test_field_reward_on_the_json_spec_step(case, step, expected):
    assert score_step(step, EXPERT_SPEC, reward="field") == pytest.approx(expected, abs=1e-12), case


def test_one_wrong_value_in_13_keys_is_clear_with_field_and_faint_with_difflib():
    wrong = spec_step({**PLANT_SPEC, "biome": "tundra"})
    difflib_score = score_step(wrong, EXPERT_SPEC, reward="difflib")
    field_score = score_step(wrong, EXPERT_SPEC, reward="field")
    assert difflib_score > 0.98  # the flat paper reward the benchmark measured
    assert field_score == pytest.approx(12 / 13)
    assert difflib_score - field_score > 0.05


def test_field_needs_an_expert_step_line():
    with pytest.raises(ValueError, match="expert step is not a step line"):
        STEP_REWARDS.get("field")("1. **A** x", "just text")


# ---- score_step: a bare step line, no think block ---------------------------------------------

# (case, step text, reason fragment) against the expert step "3. **Soil** clay"
BARE_VIOLATIONS = [
    ("think block", "<think>x</think> 3. **Soil** clay", "not a step line"),
    ("think block on its own line", "<think>x</think>\n3. **Soil** clay", "more than one line"),
    ("two step lines", "3. **Soil** clay\n4. **Next** y", "more than one line"),
    ("text after the step", "3. **Soil** clay\nbecause it is wet", "more than one line"),
    ("prose", "The soil is clay.", "not a step line"),
    ("title not bold", "3. Soil clay", "not a step line"),
    ("empty", "  \n", "empty step"),
    ("wrong step number", "4. **Soil** clay", "step number 4, expected 3"),
]


@pytest.mark.parametrize("case,text,reason", BARE_VIOLATIONS)
@pytest.mark.parametrize("reward", ["difflib", "field", "tokens"])
def test_score_step_format_rules(case, text, reason, reward):
    assert reason in step_text_violation(text, "3. **Soil** clay"), case
    assert score_step(text, "3. **Soil** clay", reward=reward) == -1.0, case


def test_score_step_scores_a_well_formed_line():
    assert step_text_violation("  3. **Soil** clay \n", "3. **Soil** clay") is None
    assert score_step("  3. **Soil** clay \n", "3. **Soil** clay") == 1.0
    assert score_step("3. **Soil** abcd", "3. **Soil** abce") == pytest.approx(30 / 32)  # difflib default
    with pytest.raises(ValueError, match="expert step is not a step line"):
        score_step("3. **Soil** clay", "clay")


def test_think_format_with_another_reward():
    assert step_reward(ok(SOIL.replace("6.5", "7.0")), SOIL, reward="field") == pytest.approx(2 / 3)
    assert step_reward("no think " + SOIL, SOIL, reward="field") == -1.0


def test_reward_fn_picks_reward_and_format():
    bare = make_step_reward_fn(reward="field", think=False)
    assert bare.__name__ == "step_reward"
    wrong = spec_step({**PLANT_SPEC, "biome": "tundra"})
    rewards = bare(["p"] * 3, [EXPERT_SPEC, wrong, ok(EXPERT_SPEC)], target=[EXPERT_SPEC] * 3)
    assert rewards == [1.0, pytest.approx(12 / 13), -1.0]  # a think block breaks the bare format
    thinking = make_step_reward_fn(reward="field")
    assert thinking(["p"], [ok(wrong)], target=[EXPERT_SPEC]) == [pytest.approx(12 / 13)]


def test_doctests():
    assert doctest.testmod(step_reward_module).failed == 0
