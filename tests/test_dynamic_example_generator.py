from collections import Counter

import pytest

from srl_assets.domains import MODEL_TYPES, get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator, split_of
from srl_assets.rules_integration import RulesIntegration


def _gen(model_type="plant", **kw):
    return DynamicExampleGenerator(get_domain(model_type), RulesIntegration().load(model_type), **kw)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_train_and_eval_never_overlap_over_10000_draws(model_type):
    gen = _gen(model_type)
    train, evals = set(), set()
    for seed in range(20):
        train |= {t.task_id for t in gen.generate(400, "train", seed)}
        evals |= {t.task_id for t in gen.generate(100, "eval", seed)}
    assert len(train) > 100 and len(evals) > 20
    assert not train & evals
    assert all(split_of(t, gen.eval_fraction) == "train" for t in train)


def test_seeded_draws_reproduce_and_differ():
    gen = _gen()
    a = [t.task_id for t in gen.generate(30, "train", seed=1)]
    assert a == [t.task_id for t in gen.generate(30, "train", seed=1)]
    assert a != [t.task_id for t in gen.generate(30, "train", seed=2)]
    assert all(t.seed == 1 for t in gen.generate(3, "train", seed=1))


def test_raised_weight_draws_more_tasks_with_the_skill():
    base = Counter(s for t in _gen().generate(300, "train", 5) for s in t.skills)
    boosted = Counter(s for t in _gen(skill_weights={"soil_ph": 8.0}).generate(300, "train", 5) for s in t.skills)
    assert boosted["soil_ph"] > base["soil_ph"] * 1.25


@pytest.mark.parametrize("kw,match", [
    ({"skill_weights": {"nope": 2.0}}, "unknown skills"),
    ({"skill_weights": {"soil_ph": 0}}, "must be > 0"),
    ({"eval_fraction": 1.5}, "eval_fraction"),
])
def test_bad_generator_config_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        _gen(**kw)
