"""The OpenAI provider on the real ``openai`` SDK against the loopback fake (tests/helpers/fake_openai.py)."""

import json
import math
from datetime import date

import openai
import pytest

from helpers.fake_openai import FakeOpenAI
from helpers.paid_data import MODEL_TYPE, good_fraction_responder, source, trajectory_rows
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.paid import get_provider
from srl_assets.paid.base import DatasetFormatError, ProviderRefused, TunedModel
from srl_assets.paid.evaluation import PaidEvalConfig, evaluate_paid
from srl_assets.paid.grader import openai_python_grader
from srl_assets.paid.openai_provider import IDEMPOTENCY_KEY

BASE = "gpt-4.1-mini-2025-04-14"
RL_BASE = "o4-mini-2025-04-16"
TODAY = date(2026, 12, 1)


@pytest.fixture(scope="module")
def data():
    return source(12)


def _tuner(fake, today=TODAY):
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    return get_provider("openai", client=client, clock=lambda: today, upload_wait_s=1.0)


def test_whole_cycle_supervised(data):
    with FakeOpenAI(responder=lambda req: "1. **Final spec** {}") as fake:
        tuner = _tuner(fake)
        records = tuner.prepare_dataset("supervised", data, base_model=BASE)
        tuner.validate_dataset("supervised", records, base_model=BASE)
        assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
        estimate = tuner.estimate_cost(BASE, "supervised", records, {"n_epochs": 2})
        assert estimate.epochs == 2 and estimate.usd == pytest.approx(estimate.training_tokens * 2 * 5.0 / 1e6)
        file_id = tuner.upload(records, "train.jsonl")
        uploaded = fake.files[file_id]["_content"].decode().splitlines()
        assert [json.loads(line) for line in uploaded] == records
        handle = tuner.create_job(base_model=BASE, method="supervised", training_uri=file_id,
                                  hyperparameters={"n_epochs": 2, "batch_size": None}, idempotency_key="srl-k1",
                                  suffix="srl-personality")
        body = fake.calls("POST", "/fine_tuning/jobs")[0].body
        assert body["metadata"] == {IDEMPOTENCY_KEY: "srl-k1"}
        # None means "OpenAI decides" and is not sent
        assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
        states = [tuner.poll(handle.job_id) for _ in range(3)]
        assert [s.state for s in states] == ["queued", "running", "succeeded"]
        assert states[-1].trained_tokens > 0 and states[-1].tuned_model.startswith(f"ft:{BASE}")
        tuned = tuner.register(states[-1])
        assert (tuned.input_per_1k_usd, tuned.output_per_1k_usd, tuned.hosting_per_hour_usd) == (0.0008, 0.0032, 0.0)
        [gen] = tuner.generate(tuned.model_id, ["hello"], max_new_tokens=16)
        assert gen.text == "1. **Final spec** {}" and gen.input_tokens > 0 and gen.output_tokens > 0
        chat = fake.calls("POST", "/chat/completions")[0].body
        assert chat["model"] == tuned.model_id and chat["max_completion_tokens"] == 16 and chat["temperature"] == 0


def test_a_second_create_with_the_same_key_finds_the_first_job(data):
    with FakeOpenAI() as fake:
        tuner = _tuner(fake)
        file_id = tuner.upload(tuner.prepare_dataset("supervised", data, base_model=BASE), "t.jsonl")
        kwargs = dict(base_model=BASE, method="supervised", training_uri=file_id, hyperparameters={},
                      idempotency_key="srl-same", suffix="x")
        first, second = tuner.create_job(**kwargs), tuner.create_job(**kwargs)
        assert second.job_id == first.job_id and second.found_existing and not first.found_existing
        assert len(fake.calls("POST", "/fine_tuning/jobs")) == 1
        assert tuner.find_job("srl-other") is None


def test_failed_job_surfaces_the_provider_error(data):
    error = {"code": "invalid_training_file", "message": "Example 3 has no assistant turn", "param": "training_file"}
    with FakeOpenAI(job_script=("validating_files", "failed"), job_error=error) as fake:
        tuner = _tuner(fake)
        file_id = tuner.upload(tuner.prepare_dataset("supervised", data, base_model=BASE), "t.jsonl")
        handle = tuner.create_job(base_model=BASE, method="supervised", training_uri=file_id, hyperparameters={},
                                  idempotency_key="srl-f", suffix="x")
        status = tuner.poll(handle.job_id)
        assert status.state == "failed" and status.terminal
        assert "Example 3 has no assistant turn" in status.error and "invalid_training_file" in status.error


def test_unknown_state_is_reported_as_unknown_then_progresses(data):
    with FakeOpenAI() as fake:
        tuner = _tuner(fake)
        file_id = tuner.upload(tuner.prepare_dataset("supervised", data, base_model=BASE), "t.jsonl")
        handle = tuner.create_job(base_model=BASE, method="supervised", training_uri=file_id, hyperparameters={},
                                  idempotency_key="srl-u", suffix="x")
        fake.set_script(handle.job_id, ["reticulating_splines", "succeeded"])
        first = tuner.poll(handle.job_id)
        assert (first.state, first.provider_state, first.terminal) == ("unknown", "reticulating_splines", False)
        assert tuner.poll(handle.job_id).state == "succeeded"


def test_refusals_name_provider_model_and_reason(data):
    with FakeOpenAI() as fake:
        late = _tuner(fake, today=date(2027, 1, 7))
        with pytest.raises(ProviderRefused, match=r"openai refuses base model 'gpt-4.1-mini-2025-04-14': "
                                                  r"no new jobs after 2027-01-06"):
            late.create_job(base_model=BASE, method="supervised", training_uri="file-x", hyperparameters={},
                            idempotency_key="srl-late", suffix="x")
        assert fake.calls("POST", "/fine_tuning/jobs") == []
        # A blocked organisation: the API answers 403.
        tuner = _tuner(fake)
        file_id = tuner.upload(tuner.prepare_dataset("supervised", data, base_model=BASE), "t.jsonl")
        fake.fail_next(1, 403, "/fine_tuning/jobs", method="POST")
        with pytest.raises(ProviderRefused, match="openai refuses base model .*HTTP 403"):
            tuner.create_job(base_model=BASE, method="supervised", training_uri=file_id, hyperparameters={},
                             idempotency_key="srl-403", suffix="x")


def test_preference_and_reinforcement_jobs(data):
    rows, tasks, domain, rules = trajectory_rows(3)
    with FakeOpenAI() as fake:
        tuner = _tuner(fake)
        prefs = tuner.prepare_dataset("preference", data, base_model=BASE)
        tuner.validate_dataset("preference", prefs, base_model=BASE)
        file_id = tuner.upload(prefs, "p.jsonl")
        tuner.create_job(base_model=BASE, method="preference", training_uri=file_id,
                         hyperparameters={"beta": 0.1}, idempotency_key="srl-dpo", suffix="x")
        assert fake.calls("POST", "/fine_tuning/jobs")[-1].body["method"] == {
            "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
        rl = tuner.prepare_dataset("reinforcement", data, base_model=RL_BASE)
        tuner.validate_dataset("reinforcement", rl, base_model=RL_BASE)
        assert rl[0]["messages"][-1]["role"] == "user" and rl[0]["task"]["task_id"]
        grader = openai_python_grader(MODEL_TYPE, rules)
        file_id = tuner.upload(rl, "r.jsonl")
        with pytest.raises(ValueError, match="needs hyperparameters\\['grader'\\]"):
            tuner.create_job(base_model="o4-mini-2025-04-16", method="reinforcement", training_uri=file_id,
                             hyperparameters={}, idempotency_key="srl-rl0", suffix="x")
        tuner.create_job(base_model="o4-mini-2025-04-16", method="reinforcement", training_uri=file_id,
                         hyperparameters={"grader": grader, "reasoning_effort": "low", "max_hours": 2},
                         idempotency_key="srl-rl", suffix="x")
        sent = fake.calls("POST", "/fine_tuning/jobs")[-1].body["method"]
        assert sent["type"] == "reinforcement" and sent["reinforcement"]["grader"]["type"] == "python"
        assert sent["reinforcement"]["hyperparameters"] == {"reasoning_effort": "low"}
        est = tuner.estimate_cost("o4-mini-2025-04-16", "reinforcement", rl, {"max_hours": 2})
        assert est.usd == 200.0 and "h ×" in est.detail
        with pytest.raises(ValueError, match="unknown hyperparameters \\['epochs'\\]"):
            tuner.create_job(base_model=BASE, method="supervised", training_uri=file_id, hyperparameters={"epochs": 1},
                             idempotency_key="srl-bad", suffix="x")


def _sft(n=10):
    return [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]} for _ in range(n)]


@pytest.mark.parametrize("method, records, index, rule", [
    ("supervised", _sft(9), -1, "needs at least 10 examples"),
    ("supervised", _sft(3) + [{"messages": [{"role": "user", "content": "q"}]}] + _sft(6), 3,
     "last turn must be 'assistant'"),
    ("supervised", _sft(5) + [{"messages": _sft(1)[0]["messages"], "score": 1}] + _sft(4), 5,
     "keys not allowed: ['score']"),
    ("supervised", _sft(2) + [{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}]
     + _sft(7), 2, "roles must alternate"),
    ("preference", [{"input": {"messages": [{"role": "user", "content": "q"}]},
                     "preferred_output": [{"role": "assistant", "content": "a"}],
                     "non_preferred_output": [{"role": "assistant", "content": "a"}]}] * 10, 0, "identical"),
    ("preference", [{"input": {"messages": [{"role": "user", "content": "q"}]},
                     "preferred_output": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
                     "non_preferred_output": [{"role": "assistant", "content": "c"}]}] * 10, 0,
     "preferred_output must be exactly one non-empty assistant message"),
    ("reinforcement", _sft(10), 0, "last turn must be 'user'"),
])
def test_dataset_format_errors_name_example_and_rule(method, records, index, rule):
    tuner = get_provider("openai", client=object())
    with pytest.raises(DatasetFormatError) as err:
        tuner.validate_dataset(method, records, base_model=RL_BASE if method == "reinforcement" else BASE)
    assert err.value.provider == "openai" and err.value.index == index and rule in str(err.value)


def test_evaluation_through_the_api_finds_the_known_pass_rate_despite_429_and_500():
    domain_rows, _, domain, rules = trajectory_rows(1)
    tasks = DynamicExampleGenerator(domain, rules).generate(40, "eval", seed=5)
    prompts = policy_prompts(tasks, rules, 0)
    respond, good = good_fraction_responder(domain, rules, tasks, 0, fraction=0.7)
    with FakeOpenAI(responder=respond) as fake:
        tuner = _tuner(fake)
        fake.fail_next(2, 429, "/chat/completions")
        fake.fail_next(1, 500, "/chat/completions")
        tuned = TunedModel("openai", "ft:gpt-4.1-mini:x", BASE, "j", 0.0008, 0.0032)
        result = evaluate_paid(tuner, tuned, "paid:openai:x", tasks, prompts, Verifier(domain, rules),
                               PaidEvalConfig(concurrency=4, max_attempts=4, timeout_s=10, backoff_initial_s=0.01,
                                              backoff_max_s=0.05))
    passed = sum(r.passed for r in result.records)
    assert passed == good                                   # every answer was judged as the fake intended
    assert abs(passed / 40 - 0.7) <= 3 * math.sqrt(0.7 * 0.3 / 40)
    assert result.attempts == 40 + 3 and len(fake.calls("POST", "/chat/completions")) == 43
    assert result.cost_usd == pytest.approx(result.input_tokens * 0.0008 / 1000 + result.output_tokens * 0.0032 / 1000)


@pytest.mark.parametrize("model_id, reasoning", [
    ("ft:o4-mini-2025-04-16:acme::abc123", True),
    ("o3-mini", True),
    ("ft:gpt-4.1-mini-2025-04-14:openai-research:srl:abc", False),   # an org name starting with "o"
    ("gpt-4o-mini-2024-07-18", False),
])
def test_o_series_gets_no_temperature(model_id, reasoning):
    from srl_assets.paid.openai_provider import _is_reasoning_model
    assert _is_reasoning_model(model_id) is reasoning
