"""The provider-neutral parts of paid fine-tuning: registry, availability dates, prices, datasets,
the generated grader, evaluation retries/timeouts and the job store."""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from srl_assets.collaboration.verifier import Verifier
from srl_assets.paid import PROVIDERS, get_provider, provider_names
from srl_assets.paid.base import (DatasetFormatError, Generation, PaidFineTuner, ProviderRefused, TunedModel)
from srl_assets.paid.datasets import approx_tokens, build_source, check_alternating_chat
from srl_assets.paid.evaluation import PaidEvalConfig, evaluate_paid, is_retryable
from srl_assets.paid.grader import grader_source, openai_python_grader
from srl_assets.paid.job_store import JobStore, candidate_name, idempotency_key
from srl_assets.paid.prices import PRICES_FILE, measured_cost, model_prices, version
from helpers.paid_data import MODEL_TYPE, expert, trajectory_rows


def test_registry_names_and_errors():
    assert {"openai", "vertex", "bedrock"} <= set(provider_names())
    assert get_provider("openai", client=object()).name == "openai"
    with pytest.raises(ValueError, match="unknown paid fine-tuning provider 'nope'.*openai"):
        get_provider("nope")
    with pytest.raises(ValueError, match="already registered"):
        PROVIDERS.register("openai")(object)


@pytest.mark.parametrize("today, method, model, refused_because", [
    (date(2027, 1, 6), "supervised", "gpt-4.1-mini-2025-04-14", None),          # last allowed day
    (date(2027, 1, 7), "supervised", "gpt-4.1-mini-2025-04-14", "no new jobs after 2027-01-06"),
    (date(2026, 12, 1), "reinforcement", "gpt-4.1-mini-2025-04-14", "method 'reinforcement' is not offered"),
    (date(2026, 12, 1), "supervised", "gpt-5-ultra", "not a tunable base model"),
    (date(2026, 12, 1), "reinforcement", "o4-mini-2025-04-16", None),
])
def test_availability_is_checked_against_the_injected_clock(today, method, model, refused_because):
    tuner = get_provider("openai", client=object(), clock=lambda: today)
    if refused_because is None:
        tuner.check_available(model, method)
        return
    with pytest.raises(ProviderRefused) as err:
        tuner.check_available(model, method)
    assert err.value.provider == "openai" and err.value.model == model
    assert refused_because in str(err.value) and "openai" in str(err.value) and model in str(err.value)


def test_price_table_is_dated_and_complete_for_openai():
    assert date.fromisoformat(version())
    for info in get_provider("openai", client=object()).base_models():
        assert info.prices is not None and info.prices.source.startswith("https://"), info.id
    p = model_prices("openai", "gpt-4.1-mini-2025-04-14")
    assert measured_cost(p, 2000, 1000) == pytest.approx(2 * p.input_per_1k + p.output_per_1k)
    with pytest.raises(LookupError, match=f"{PRICES_FILE.name}.*openai.models.gpt-9"):
        model_prices("openai", "gpt-9")


def test_datasets_from_verified_trajectories_and_verifier_ranked_pairs():
    rows, tasks, domain, rules = trajectory_rows(10)
    rows[0] = {**rows[0], "trajectory": rows[0]["trajectory"].replace("Final spec", "Last spec")}  # no longer passes
    source, counts = build_source(MODEL_TYPE, rows, tasks, domain, rules, lore_k=0)
    assert counts["dropped_unverified"] == 1 and counts["sft_examples"] == 9
    verifier, by_id = Verifier(domain, rules), {t.task_id: t for t in tasks}
    assert all(verifier.verify_trajectory(by_id[e.task_id], e.completion).passed for e in source.sft)
    assert len(source.preference) == 9       # build_source's own pairs: the mutated-copy fallback, labelled so
    assert {(p.metadata["chosen_from"], p.metadata["rejected_from"]) for p in source.preference} == {
        ("expert_trajectory", "mutated_copy")}
    for pair in source.preference:
        assert verifier.verify_trajectory(by_id[pair.task_id], pair.chosen).passed
        assert not verifier.verify_trajectory(by_id[pair.task_id], pair.rejected).passed
    assert source.reinforcement[0].task["task_id"] == source.reinforcement[0].task_id
    assert approx_tokens([{"a": "x" * 400}]) >= 100


@pytest.mark.parametrize("messages, rule", [
    ([], "non-empty list"),                                                       # nothing
    ([{"role": "assistant", "content": "a"}], "turn 0 is 'assistant', expected 'user'"),
    ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}], "turn 1 is 'user'"),
    ([{"role": "user", "content": "q"}], "last turn must be 'assistant'"),
    ([{"role": "user", "content": "q", "extra": 1}, {"role": "assistant", "content": "a"}], "keys not allowed"),
    ([{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}], "empty 'content'"),
])
def test_chat_checks_name_example_and_rule(messages, rule):
    with pytest.raises(DatasetFormatError) as err:
        check_alternating_chat("openai", 7, messages)
    assert err.value.index == 7 and rule in str(err.value) and "example 7" in str(err.value)


def test_generated_grader_is_the_verifier_and_runs_alone(tmp_path):
    rows, tasks, domain, rules = trajectory_rows(3)
    grader = openai_python_grader(MODEL_TYPE, rules)
    assert grader["type"] == "python" and len(grader["source"].encode()) < 256 * 1024
    broken = rows[0]["trajectory"].rsplit("\n", 1)[0] + "\n9. **Final spec** {}"
    script = tmp_path / "grader.py"
    script.write_text(grader["source"] + "\nimport json, sys\nitem = json.loads(sys.argv[1])\n"
                      "for t in sys.argv[2:]: print(grade({'output_text': t}, item))\n")
    # -I: an isolated interpreter without the repository on its path, like the provider's sandbox.
    out = subprocess.run([sys.executable, "-I", str(script), json.dumps({"task": tasks[0].to_row()}),
                          rows[0]["trajectory"], "<think>x</think>" + rows[0]["trajectory"], broken, "junk"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert [float(x) for x in out] == [1.0, 1.0, 0.0, 0.0]
    assert "def evaluate(example, response)" in grader_source(MODEL_TYPE, rules, "evaluate")


class _Flaky(PaidFineTuner):
    """A provider whose generate fails (429, then a hang past the timeout) before answering."""

    name = "flaky"

    def __init__(self, answers, failures, **kw):
        super().__init__(**kw)
        self.answers, self.failures, self.calls, self.lock = answers, list(failures), 0, threading.Lock()

    def generate(self, model_id, prompts, max_new_tokens, temperature=0.0):
        with self.lock:
            self.calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if failure == "429":
            exc = RuntimeError("rate limited")
            exc.status_code = 429
            raise exc
        if failure == "hang":
            time.sleep(2.0)
        return [Generation(self.answers[p], 10, 20, 0.01) for p in prompts]

    base_models = prepare_dataset = validate_dataset = estimate_cost = upload = create_job = None
    find_job = poll = cancel = register = None


_Flaky.__abstractmethods__ = frozenset()


def test_evaluation_retries_429_and_timeouts_and_costs_usage():
    rows, tasks, domain, rules = trajectory_rows(4)
    prompts = [f"p{i}" for i in range(4)]
    answers = {p: expert(domain, rules, t) for p, t in zip(prompts, tasks)}
    tuner = _Flaky(answers, ["429", "hang", "429"])
    tuned = TunedModel("flaky", "m", "b", "j", input_per_1k_usd=1.0, output_per_1k_usd=2.0)
    cfg = PaidEvalConfig(concurrency=2, max_attempts=4, timeout_s=0.5, backoff_initial_s=0.01, backoff_max_s=0.02)
    result = evaluate_paid(tuner, tuned, "paid:flaky:x", tasks, prompts, Verifier(domain, rules), cfg)
    assert [r.passed for r in result.records] == [True] * 4
    assert result.attempts == 7 and tuner.call_timeout_s == 0.5
    assert result.input_tokens == 40 and result.output_tokens == 80
    assert result.cost_usd == pytest.approx(40 / 1000 * 1.0 + 80 / 1000 * 2.0)


def test_evaluation_raises_non_retryable_errors_instead_of_scoring_them():
    rows, tasks, domain, rules = trajectory_rows(1)
    tuner = _Flaky({}, [])  # KeyError: a bug, not an outage
    with pytest.raises(KeyError):
        evaluate_paid(tuner, TunedModel("flaky", "m", "b", "j"), "c", tasks, ["p"], Verifier(domain, rules),
                      PaidEvalConfig(max_attempts=3, backoff_initial_s=0.01))
    assert tuner.calls == 1


@pytest.mark.parametrize("exc, retry", [
    (type("E", (Exception,), {"status_code": 429})(), True),
    (type("E", (Exception,), {"status_code": 503})(), True),
    (type("E", (Exception,), {"status_code": 400})(), False),
    (type("E", (Exception,), {"code": 500})(), True),                                   # google-genai APIError
    (type("E", (Exception,), {"response": {"Error": {"Code": "ThrottlingException"},
                                           "ResponseMetadata": {"HTTPStatusCode": 400}}})(), True),  # botocore
    (type("E", (Exception,), {"response": {"Error": {"Code": "ValidationException"},
                                           "ResponseMetadata": {"HTTPStatusCode": 400}}})(), False),
    (TimeoutError(), True),
    (ValueError("bug"), False),
])
def test_is_retryable(exc, retry):
    assert is_retryable(exc) is retry


def test_job_store_keys_spend_and_candidates(store):
    k1 = idempotency_key("personality", "openai", "m", "supervised", b"data", {"n_epochs": 2})
    assert k1 == idempotency_key("personality", "openai", "m", "supervised", b"data", {"n_epochs": 2})
    assert k1 != idempotency_key("personality", "openai", "m", "supervised", b"data2", {"n_epochs": 2})
    assert k1.startswith("srl-") and len(k1) == 36
    js = JobStore(store)
    js.upsert({"idempotency_key": "a", "model_type": "personality", "status": "dry_run", "estimate_usd": 5.0,
               "created_at": "1"})
    js.upsert({"idempotency_key": "b", "model_type": "personality", "status": "submitted", "estimate_usd": 3.0,
               "created_at": "2", "job_id": "j1"})
    js.upsert({"idempotency_key": "c", "model_type": "personality", "status": "succeeded", "estimate_usd": 3.0,
               "measured_usd": 1.5, "created_at": "3", "job_id": "j2"})
    assert js.committed_spend() == pytest.approx(4.5) and js.committed_spend(exclude_key="b") == pytest.approx(1.5)
    assert list(js.pending().job_id) == ["j1"]
    name = js.add_candidate("personality", TunedModel("openai", "ft:x", "b", "j2", 0.1, 0.2), "supervised")
    assert name == candidate_name("openai", "ft:x") and name.startswith("paid:openai:")
    assert js.candidates("personality").iloc[0].output_per_1k_usd == 0.2


def test_sdk_clients_are_built_once_even_from_many_threads():
    """paid.evaluation calls generate from several threads; a lazily built client must be built
    once (a second google-genai client would close the first's connections when collected)."""
    built = []

    def slow_factory():
        time.sleep(0.05)
        built.append(object())
        return built[-1]

    tuner = get_provider("openai", client_factory=slow_factory)
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: tuner.client, range(8)))
    assert len(built) == 1 and all(c is built[0] for c in clients)
