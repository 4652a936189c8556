"""The verifier never raises on model output and always scores in [0, 1]."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srl_assets.collaboration.verifier import FORMAT_SKILL, SCHEMA_SKILL, Verifier
from srl_assets.domains import MODEL_TYPES, get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory


@pytest.fixture(scope="module", params=MODEL_TYPES)
def env(request):
    rules = RulesIntegration().load(request.param)
    domain = get_domain(request.param)
    task = DynamicExampleGenerator(domain, rules).generate(1, "train", 0)[0]
    plan = domain.plan(task.params, rules)
    return Verifier(domain, rules), task, render_trajectory(plan.steps, plan.spec)


ADVERSARIAL = [
    "", "\x00" * 50, "1. **Final spec** " + "[" * 100_000, "1. **Final spec** " + "{\"a\":" * 5000,
    "1. **Final spec** NaN", "1. **Final spec** {\"x\": Infinity}", "1. **Final spec** null",
    "1. **Final spec** []", "1. **Final spec** \"string\"", "1. **Final spec** 1e999",
    "1. **Final spec** {}", "9999999999999999999. **Final spec** {}", "x" * 1_000_000,
    "1. **Plan** ok\n2. **Final spec** {\"name\": " + "\"a\"" + "}" * 3,
    "<think>" * 1000, "1. ****  \n2. ** **", "\udcff broken surrogate",
]


def test_adversarial_inputs_are_rejected_not_raised(env):
    verifier, task, _ = env
    for text in ADVERSARIAL:
        verdict = verifier.verify_trajectory(task, text)
        assert not verdict.passed and 0.0 <= verdict.score <= 1.0
        assert verdict.failed_skills and set(verdict.failed_skills) <= {FORMAT_SKILL, SCHEMA_SKILL}
    for value in (None, 42, ["list"], {"dict": 1}, b"bytes"):
        assert verifier.verify_trajectory(task, value).score == 0.0


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=400), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.builds(lambda s: f"1. **Final spec** {s}", st.text(max_size=200)),
                      st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
                                   lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                                   max_leaves=30).map(lambda v: f"1. **Plan** go\n2. **Final spec** {json.dumps(v)}")))
def test_random_strings_never_raise(text):
    for model_type in MODEL_TYPES:
        verifier, task, _ = _ENVS[model_type]
        verdict = verifier.verify_trajectory(task, text)
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.passed is False or verdict.score == 1.0


def _build_envs():
    out = {}
    for model_type in MODEL_TYPES:
        rules = RulesIntegration().load(model_type)
        domain = get_domain(model_type)
        task = DynamicExampleGenerator(domain, rules).generate(1, "train", 0)[0]
        out[model_type] = (Verifier(domain, rules), task, None)
    return out


_ENVS = _build_envs()


def test_truncated_or_renumbered_trajectory_is_a_format_failure(env):
    verifier, task, text = env
    assert verifier.verify_trajectory(task, text).passed
    lines = text.splitlines()
    assert FORMAT_SKILL in verifier.verify_trajectory(task, "\n".join(lines[:-1])).failed_skills
    renumbered = "\n".join(["7" + line[1:] if i == 0 else line for i, line in enumerate(lines)])
    assert FORMAT_SKILL in verifier.verify_trajectory(task, renumbered).failed_skills
    spec_only = lines[-1].split("** ", 1)[1]
    assert SCHEMA_SKILL in verifier.verify_spec_text(task, json.dumps({"unrelated": 1})).failed_skills
    assert verifier.verify_spec_text(task, spec_only).passed
