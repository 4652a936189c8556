"""The contract every model-type domain must honour (run for all seven)."""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srl_assets.collaboration.verifier import SCHEMA_SKILL, Verifier
from srl_assets.domains import MODEL_TYPES, get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory, spec_to_json

N_TASKS = 500


@pytest.fixture(scope="module", params=MODEL_TYPES)
def setup(request):
    model_type = request.param
    rules = RulesIntegration().load(model_type)
    domain = get_domain(model_type)
    generator = DynamicExampleGenerator(domain, rules)
    tasks = generator.generate(N_TASKS, "train", seed=7)
    return domain, rules, Verifier(domain, rules), tasks


def test_teacher_trajectories_all_pass_the_verifier(setup):
    domain, rules, verifier, tasks = setup
    assert len({t.task_id for t in tasks}) == N_TASKS
    for task in tasks:
        plan = domain.plan(task.params, rules)
        verdict = verifier.verify_trajectory(task, render_trajectory(plan.steps, plan.spec))
        assert verdict.passed, (task.prompt, verdict.failures)
        assert verdict.score == 1.0
        assert len(plan.steps) >= 2


def test_tasks_differ_and_skills_vary(setup):
    domain, rules, _, tasks = setup
    assert set(domain.skills) >= {s for t in tasks for s in t.skills}
    assert {s for t in tasks for s in t.skills} == set(domain.skills), "every skill must be exercised"
    assert len({t.prompt for t in tasks}) > N_TASKS * 0.5, "tasks must differ meaningfully"


def test_each_mutated_constraint_fails_with_its_skill_named(setup):
    domain, rules, verifier, tasks = setup
    rng = random.Random(0)
    for skill in domain.skills:
        exercising = [t for t in tasks if skill in t.skills][:20]
        assert exercising, f"no task exercises {skill}"
        for task in exercising:
            spec = domain.plan(task.params, rules).spec
            broken = domain.mutate(skill, task.params, spec, rules, rng)
            assert broken != spec
            verdict = verifier.verify_spec_text(task, spec_to_json(broken))
            assert not verdict.passed, (skill, task.prompt, broken)
            assert skill in verdict.failed_skills, (skill, verdict.failures)
            assert 0.0 <= verdict.score < 1.0


def _shape_strategy(shape):
    if shape is str:
        return st.one_of(st.text(max_size=30), st.sampled_from(["", "none", "spring", "rare", "happiness", "oak"]))
    if shape is bool:
        return st.booleans()
    if shape is int:
        return st.integers(-10**12, 10**12)
    if shape is float:
        return st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=False, allow_infinity=False))
    if isinstance(shape, list):
        return st.lists(_shape_strategy(shape[0]), max_size=6)
    if isinstance(shape, tuple) and shape[0] == "map":
        return st.dictionaries(st.text(max_size=12), _shape_strategy(shape[1]), max_size=5)
    if isinstance(shape, tuple) and shape[0] == "optional":
        return _shape_strategy(shape[1])
    assert isinstance(shape, dict)
    return st.fixed_dictionaries({k: _shape_strategy(v[1] if isinstance(v, tuple) and v[0] == "optional" else v)
                                  for k, v in shape.items()})


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_shape_valid_random_specs_never_raise(model_type):
    rules = RulesIntegration().load(model_type)
    domain = get_domain(model_type)
    verifier = Verifier(domain, rules)
    tasks = DynamicExampleGenerator(domain, rules).generate(20, "train", seed=3)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(spec=_shape_strategy(domain.spec_shape), index=st.integers(0, len(tasks) - 1))
    def check(spec, index):
        verdict = verifier.verify_spec_text(tasks[index], json.dumps(spec))
        assert 0.0 <= verdict.score <= 1.0
        assert SCHEMA_SKILL not in verdict.failed_skills

    check()
