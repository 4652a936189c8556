"""Each domain's ``validate_params`` (every drawn task passes, bad params name the field), and the
continuous batch the API's generation workers decode with (greedy rows match ``generate``)."""

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


# ----------------------------------------------------------------------------------------------
# Continuous batching (srl_assets.serving.continuous): what the API's generation workers run


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, as the API's worker runs on a 2-core machine: two threads on cores that other
    work is using wait on each other (measured 10-40x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, one_thread):
    from srl_assets.collaboration.lore_retriever import policy_prompts
    from srl_assets.dynamic_example_generator import DynamicExampleGenerator
    import torch

    from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, load_model, save_model, train_bpe_tokenizer

    domain, rules = get_domain("tree"), RulesIntegration().load("tree")
    tasks = DynamicExampleGenerator(domain, rules).generate(12, "train", 0)
    prompts = policy_prompts(tasks, rules, 0)
    tokenizer = train_bpe_tokenizer(prompts, vocab_size=320)
    cfg = TinyModelConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, intermediate_size=64, max_position_embeddings=512)
    out = tmp_path_factory.mktemp("tiny")
    model = build_tiny_model(tokenizer, cfg, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():  # large random weights: varied text rather than one token repeated
        for p in model.parameters():
            p.normal_(0, 0.3)
    save_model(model, tokenizer, out)
    model, tokenizer = load_model(str(out))
    return model, tokenizer, prompts


def _drain(batch, results: dict, joins: dict) -> None:
    """Step until idle, adding ``joins[step]`` = [(request, prompts, max_new_tokens, temperature)] on the way."""
    while not batch.idle or joins:
        for args in joins.pop(batch.steps, []):
            batch.add(*args)
        for done in batch.step():
            results[done.request] = done
        if batch.idle and joins:  # nothing running: the next joins come now
            for args in joins.pop(min(joins)):
                batch.add(*args)


def test_continuous_batching_matches_static_greedy_generation(tiny_model):
    import torch

    from srl_assets.models.tiny import generate
    from srl_assets.serving.continuous import ContinuousBatch

    model, tokenizer, prompts = tiny_model
    torch.manual_seed(0)
    expected = generate(model, tokenizer, prompts, max_new_tokens=40, batch_size=len(prompts))
    short = generate(model, tokenizer, prompts[:2], max_new_tokens=7, batch_size=2)
    # 4 slots for 12 prompts: rows wait, join mid-run at different steps, and leave as they finish;
    # one request carries two prompts, one asks for fewer tokens, sampled rows run alongside.
    batch = ContinuousBatch(model, tokenizer, slots=4)
    joins = {0: [("a", prompts[0:2], 40, 0.0), ("short", prompts[0:2], 7, 0.0)],
             3: [(f"p{i}", [prompts[i]], 40, 0.0) for i in range(2, 6)] + [("hot", [prompts[6]], 40, 1.0)],
             17: [(f"p{i}", [prompts[i]], 40, 0.0) for i in range(6, 12)]}
    results: dict = {}
    _drain(batch, results, joins)
    assert results["a"].texts == expected[0:2]
    assert results["short"].texts == short and all(n <= 7 for n in results["short"].output_tokens)
    assert [results[f"p{i}"].texts[0] for i in range(2, 12)] == expected[2:12]
    assert results["hot"].output_tokens[0] <= 40 and results["a"].input_tokens == [
        len(tokenizer(p)["input_ids"]) for p in prompts[0:2]]
    assert batch.max_rows == 4 and batch.idle  # rows shared steps; every slot was freed


def test_continuous_batching_moves_its_window_when_the_cache_fills(tiny_model):
    from srl_assets.models.tiny import generate
    from srl_assets.serving.continuous import ContinuousBatch

    model, tokenizer, prompts = tiny_model
    expected = generate(model, tokenizer, prompts[:8], max_new_tokens=60, batch_size=8)
    assert len(set(expected)) >= 6  # varied texts: a row reading another's cache would show
    batch = ContinuousBatch(model, tokenizer, slots=2)
    results: dict = {}
    # Each row joins while the one before it runs, so some row is always live while the columns advance
    # past the end of the first cache: its window is moved to the start.
    _drain(batch, results, {40 * i: [(f"r{i}", [prompts[i]], 60, 0.0)] for i in range(8)})
    assert [results[f"r{i}"].texts[0] for i in range(8)] == expected
    assert batch.moves >= 2 and batch.col < batch.capacity
