"""Each domain's ``validate_params``: every drawn task passes, and bad params name the field."""

from __future__ import annotations

import random

import pytest

from srl_assets.domains import MODEL_TYPES, get_domain
from srl_assets.domains.base import ParamsError
from srl_assets.rules_integration import RulesIntegration


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_drawn_task_is_valid_and_plannable(model_type):
    domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
    rng = random.Random(11)
    for _ in range(300):
        params = domain.sample_params(rng, rules)
        domain.validate_params(params, rules)
        plan = domain.plan(params, rules)
        assert domain.check(params, plan.spec, rules) == []


def _drawn(model_type: str, where=lambda p: True) -> dict:
    domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
    rng = random.Random(5)
    while True:
        params = domain.sample_params(rng, rules)
        if where(params):
            return params


CASES = [
    # (model type, how to break a drawn task, field named, words in the message)
    ("personality", lambda p: {**p, "mood": "x"}, "mood", "unknown parameter"),
    ("personality", lambda p: {**p, "emotion": "ennui"}, "emotion", "unknown emotion 'ennui'"),
    ("personality", lambda p: {**p, "ask_action": "yes"}, "ask_action", "must be true or false"),
    ("personality", lambda p: {**p, "traits": {"charm": "high"}}, "traits.charm", "unknown trait"),
    ("personality", lambda p: {**p, "traits": {"openness": "medium"}}, "traits.openness", "'high' or 'low'"),
    ("facial", lambda p: {**p, "intensity": "F"}, "intensity", "unknown intensity letter 'F'"),
    ("facial", lambda p: {**{k: v for k, v in p.items() if k not in ("gaze", "gaze_intensity")},  # gaze alone
                          "gaze": sorted(RulesIntegration().load("facial").data["gaze"])[0]},
     "gaze_intensity", "go together"),
    ("building", lambda p: {**p, "floors": 99}, "floors", "outside the rules' range"),
    ("building", lambda p: {**p, "floors": 2.5}, "floors", "must be an integer"),
    ("building", lambda p: {k: v for k, v in p.items() if k != "function"}, "function", "is required"),
    ("animal", lambda p: {**p, "diet": "stone"}, "diet", "unknown diet of"),
    ("animal", lambda p: {**p, "max_mass_kg": -1}, "max_mass_kg", "outside the rules' range"),
    ("plant", lambda p: {**p, "biome": "moon"}, "biome", "unknown biome of"),
    ("plant", lambda p: {**p, "max_height_m": True}, "max_height_m", "must be a number"),
    ("tree", lambda p: {**p, "age_years": 0}, "age_years", "outside the rules' range"),
    ("tree", lambda p: {**p, "season": "monsoon"}, "season", "unknown season 'monsoon'"),
    ("sound", lambda p: {**p, "kind": "speech"}, "kind", "unknown kind 'speech'"),
    ("sound", lambda p: {**p, "kind": "ambience", "mood": "calm"}, "mood", "unknown parameter"),
]


@pytest.mark.parametrize("model_type, breaks, field, words", CASES)
def test_bad_params_name_the_field(model_type, breaks, field, words):
    domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
    with pytest.raises(ParamsError) as err:
        domain.validate_params(breaks(_drawn(model_type)), rules)
    assert err.value.field == field and words in str(err.value) and str(err.value).startswith(f"params.{field}:")


def test_params_must_be_an_object():
    with pytest.raises(ParamsError, match="must be a JSON object"):
        get_domain("plant").validate_params(["family"], RulesIntegration().load("plant"))


def test_a_side_only_for_unilateral_emotions():
    rules = RulesIntegration().load("facial")
    domain = get_domain("facial")
    bilateral = _drawn("facial", lambda p: p["emotion"] not in rules.data["unilateral"])
    with pytest.raises(ParamsError, match="only unilateral emotions"):
        domain.validate_params({**bilateral, "side": "left"}, rules)
    unilateral = _drawn("facial", lambda p: p["emotion"] in rules.data["unilateral"])
    with pytest.raises(ParamsError, match="is required for the unilateral emotion"):
        domain.validate_params({k: v for k, v in unilateral.items() if k != "side"}, rules)
