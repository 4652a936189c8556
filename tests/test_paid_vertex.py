"""Gemini tuning on Vertex, end to end against loopback fakes: the real google-genai client in
Vertex mode (static token, ``http_options.base_url``) and the real google-cloud-storage client
talking to gcp-storage-emulator."""

from __future__ import annotations

import json
import logging
from datetime import date

import pytest

from srl_assets.paid import get_provider
from srl_assets.paid.base import (ChatExample, DatasetFormatError, DatasetSource, PaidFineTuningError,
                                  PreferencePair, ProviderRefused, ReinforcementItem)
from srl_assets.paid.datasets import SYSTEM_PROMPT
from srl_assets.paid.vertex_provider import LABEL_KEY, label_value
from helpers.fake_vertex import TOKEN

TODAY = date(2026, 12, 1)
FLASH = "gemini-2.5-flash"
SOURCE = DatasetSource(
    model_type="tree",
    sft=tuple(ChatExample(prompt=f"task {i}", completion=f"1. **Final spec** {{\"n\": {i}}}", system="write specs",
                          task_id=f"t{i}") for i in range(4)),
    preference=(PreferencePair(prompt="task 0", chosen="good", rejected="bad", system="write specs"),),
    reinforcement=(ReinforcementItem(prompt="task 0", task={"task_id": "t0", "params": {"n": 0}}),),
)


@pytest.fixture
def fake(vertex_fake):
    """The session's Vertex fake (helpers.paid_fakes): answers "answer to <prompt>", bucket srl-tuning."""
    return vertex_fake


@pytest.fixture
def tuner(fake):
    return get_provider("vertex", client=fake.genai_client(), storage_client=fake.storage_client(),
                        project=fake.project, location=fake.location, bucket="gs://srl-tuning/datasets",
                        clock=lambda: TODAY)


def _submit(tuner, key: str, method: str = "supervised", hyper: dict | None = None):
    records = tuner.prepare_dataset(method, SOURCE, base_model=FLASH)
    tuner.validate_dataset(method, records, base_model=FLASH)
    uri = tuner.upload(records, f"tree-{method}-{key}")
    return tuner.create_job(base_model="gemini-2.5-flash", method=method, training_uri=uri,
                            hyperparameters=hyper if hyper is not None else {"epoch_count": 2, "adapter_size": 4},
                            idempotency_key=key, suffix="srl-tree")


def test_whole_cycle_supervised(fake, tuner, caplog):
    caplog.set_level(logging.INFO)
    records = tuner.prepare_dataset("supervised", SOURCE, base_model=FLASH)
    assert records[0] == {"systemInstruction": {"role": "system", "parts": [{"text": "write specs"}]},
                          "contents": [{"role": "user", "parts": [{"text": "task 0"}]},
                                       {"role": "model", "parts": [{"text": '1. **Final spec** {"n": 0}'}]}]}
    tuner.validate_dataset("supervised", records, base_model=FLASH)
    estimate = tuner.estimate_cost("gemini-2.5-flash", "supervised", records, {"epoch_count": 2})
    assert estimate.epochs == 2 and estimate.training_tokens > 0
    assert estimate.usd == pytest.approx(estimate.training_tokens * 2 * 5.00 / 1e6, rel=1e-6)

    uri = tuner.upload(records, "tree-sft-cycle")
    assert uri == "gs://srl-tuning/datasets/tree-sft-cycle.jsonl"
    stored = fake.storage_client().bucket("srl-tuning").blob("datasets/tree-sft-cycle.jsonl").download_as_bytes()
    assert [json.loads(line) for line in stored.decode().splitlines()] == records

    handle = tuner.create_job(base_model="gemini-2.5-flash", method="supervised", training_uri=uri,
                              hyperparameters={"epoch_count": 2, "adapter_size": 4, "learning_rate_multiplier": None},
                              idempotency_key="Tree:SFT:cycle", suffix="srl-tree")
    assert not handle.found_existing
    sent = fake.jobs[handle.job_id].body
    assert sent["labels"] == {LABEL_KEY: label_value("Tree:SFT:cycle")} == {LABEL_KEY: "tree-sft-cycle"}
    assert sent["supervisedTuningSpec"] == {"trainingDatasetUri": uri,
                                            "hyperParameters": {"epochCount": 2, "adapterSize": "ADAPTER_SIZE_FOUR"}}
    assert "learningRateMultiplier" not in json.dumps(sent)  # None is dropped, never sent

    states = [tuner.poll(handle.job_id) for _ in range(3)]
    assert [s.state for s in states] == ["queued", "running", "succeeded"]
    done = states[-1]
    assert done.tuned_model.endswith("/endpoints/e" + handle.job_id.rsplit("/", 1)[1])
    assert done.trained_tokens == fake.billable_tokens and done.base_model == "gemini-2.5-flash"

    model = tuner.register(done)
    assert (model.model_id, model.hosting_per_hour_usd) == (done.tuned_model, 0.0)
    assert (model.input_per_1k_usd, model.output_per_1k_usd) == (0.0003, 0.0025)
    generations = tuner.generate(model.model_id, ["task 1", "task 2"], max_new_tokens=64)
    assert [g.text for g in generations] == ["answer to task 1", "answer to task 2"]
    assert fake.requests[-1][2]["systemInstruction"]["parts"] == [{"text": SYSTEM_PROMPT}]  # as in training
    assert all(g.input_tokens >= 1 and g.output_tokens >= 1 and g.latency_s >= 0 for g in generations)
    # Every request carried the static bearer; the token never reached a log line.
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for h in fake.headers_seen)
    assert TOKEN not in caplog.text


def test_retried_create_finds_the_job(fake, tuner):
    first = _submit(tuner, "tree-retry")
    before = len(fake.jobs)
    again = _submit(tuner, "tree-retry")  # e.g. the op crashed after create, before recording it
    assert again.found_existing and again.job_id == first.job_id and len(fake.jobs) == before
    assert tuner.find_job("tree-retry").job_id == first.job_id
    assert tuner.find_job("never-submitted") is None


def test_long_keys_get_distinct_valid_labels():
    a, b = label_value("x" * 80 + "a"), label_value("x" * 80 + "b")
    assert a != b and len(a) <= 63 and len(b) <= 63


def test_failed_job_surfaces_its_error(fake, tuner):
    fake.script_next_job(["JOB_STATE_RUNNING", "JOB_STATE_FAILED"],
                         error={"code": 3, "message": "Dataset example 7 exceeds the token limit"})
    handle = _submit(tuner, "tree-fails")
    assert tuner.poll(handle.job_id).state == "running"
    failed = tuner.poll(handle.job_id)
    assert failed.state == "failed" and failed.terminal
    assert failed.error == "Dataset example 7 exceeds the token limit (code 3)"
    with pytest.raises(PaidFineTuningError, match="not succeeded"):
        tuner.register(failed)


def test_unknown_state_is_unknown_and_polled_again(fake, tuner, caplog):
    fake.script_next_job(["JOB_STATE_SOMETHING_NEW", "JOB_STATE_SUCCEEDED"])
    handle = _submit(tuner, "tree-unknown")
    first = tuner.poll(handle.job_id)
    assert (first.state, first.provider_state, first.terminal) == ("unknown", "JOB_STATE_SOMETHING_NEW", False)
    assert "JOB_STATE_SOMETHING_NEW" in caplog.text
    assert tuner.poll(handle.job_id).state == "succeeded"


def test_cancel(fake, tuner):
    handle = _submit(tuner, "tree-cancel")
    tuner.cancel(handle.job_id)
    assert tuner.poll(handle.job_id).state == "cancelled"


def test_preference_tuning_sends_beta(fake, tuner):
    records = tuner.prepare_dataset("preference", SOURCE, base_model=FLASH)
    assert records[0]["completions"][0] == {"score": 1.0, "completion": {"role": "model", "parts": [{"text": "good"}]}}
    handle = _submit(tuner, "tree-pref", "preference", {"epoch_count": 1, "beta": 0.1})
    spec = fake.jobs[handle.job_id].body["preferenceOptimizationSpec"]
    assert spec["hyperParameters"] == {"epochCount": 1, "beta": 0.1}
    assert tuner.find_job("tree-pref").method == "preference"


def test_reinforcement_sends_the_reward_snippet(fake, tuner):
    records = tuner.prepare_dataset("reinforcement", SOURCE, base_model=FLASH)
    assert json.loads(records[0]["references"]["task"]) == {"params": {"n": 0}, "task_id": "t0"}
    with pytest.raises(ValueError, match="needs hyperparameters.'grader'."):
        _submit(tuner, "tree-rl-missing", "reinforcement", {"epoch_count": 1})
    snippet = "def evaluate(example, response) -> float:\n    return 1.0\n"
    handle = _submit(tuner, "tree-rl", "reinforcement", {"epoch_count": 1, "grader": snippet})
    spec = fake.jobs[handle.job_id].body["reinforcementTuningSpec"]
    scorer = spec["singleRewardConfig"]["codeExecutionRewardScorer"]
    # google-genai 3.3 sends this one field in snake_case; proto3 JSON accepts either spelling.
    assert scorer.get("pythonCodeSnippet", scorer.get("python_code_snippet")) == snippet


@pytest.mark.parametrize("method, mutate, rule", [
    ("supervised", lambda r: r["contents"].reverse(), "roles must alternate user/model"),
    ("supervised", lambda r: r["contents"].pop(), "the last turn must be 'model'"),
    ("supervised", lambda r: r.update(messages=[]), "keys not allowed for supervised: ['messages']"),
    ("supervised", lambda r: r["contents"][1]["parts"][0].update(text=" "), "part 0 must be {'text'"),
    ("supervised", lambda r: r["contents"][0].update(role="assistant"), "role must be one of ['user', 'model']"),
    ("supervised", lambda r: r["contents"][1]["parts"][0].update(text="x" * 600_000), "131072-token limit"),
    ("preference", lambda r: r["completions"].pop(), "exactly 2 scored completions"),
    ("preference", lambda r: r["completions"][1].update(score=1.0), "different scores"),
    ("preference", lambda r: r["contents"].append({"role": "model", "parts": [{"text": "x"}]}),
     "the last turn must be 'user'"),
])
def test_bad_dataset_names_example_and_rule(tuner, method, mutate, rule):
    records = tuner.prepare_dataset(method, SOURCE, base_model=FLASH)
    bad = len(records) - 1
    mutate(records[bad])
    with pytest.raises(DatasetFormatError) as caught:
        tuner.validate_dataset(method, records, base_model=FLASH)
    assert caught.value.index == bad and rule in caught.value.rule
    assert f"example {bad}" in str(caught.value)


def test_unknown_hyperparameter_is_named(tuner):
    with pytest.raises(ValueError, match="unknown hyperparameter 'n_layers'"):
        _submit(tuner, "tree-bad-hyper", hyper={"n_layers": 3})


def test_refused_model_and_method(fake, tuner):
    with pytest.raises(ProviderRefused) as caught:
        tuner.check_available("gemini-1.0-pro", "supervised")
    assert caught.value.provider == "vertex" and caught.value.model == "gemini-1.0-pro"
    before = len(fake.jobs)
    with pytest.raises(ProviderRefused, match="method 'reinforcement' is not offered"):
        tuner.create_job(base_model="gemini-2.5-pro", method="reinforcement", training_uri="gs://srl-tuning/x",
                         hyperparameters={}, idempotency_key="refused", suffix="x")
    assert len(fake.jobs) == before  # refused before any create call


def test_a_403_from_vertex_is_a_clear_refusal(fake, tuner):
    fake.refused["gemini-2.5-pro"] = "Permission 'aiplatform.tuningJobs.create' denied on project test-project"
    try:
        with pytest.raises(ProviderRefused) as caught:
            tuner.create_job(base_model="gemini-2.5-pro", method="supervised", training_uri="gs://srl-tuning/x",
                             hyperparameters={}, idempotency_key="tree-403", suffix="x")
    finally:
        fake.refused.clear()
    assert (caught.value.provider, caught.value.model) == ("vertex", "gemini-2.5-pro")
    assert "HTTP 403" in caught.value.reason and "aiplatform.tuningJobs.create" in caught.value.reason


def test_refusal_dates_come_from_the_injected_clock(fake):
    from srl_assets.paid.base import BaseModelInfo
    from srl_assets.paid.vertex_provider import VertexFineTuner

    class Retiring(VertexFineTuner):
        def base_models(self):
            return [BaseModelInfo("gemini-2.5-flash", ("supervised",), date(2027, 1, 6), "retired")]

    Retiring(client=fake.genai_client(), clock=lambda: date(2027, 1, 6)).check_available("gemini-2.5-flash", "supervised")
    with pytest.raises(ProviderRefused, match="no new jobs after 2027-01-06 .today is 2027-01-07.: retired"):
        Retiring(client=fake.genai_client(), clock=lambda: date(2027, 1, 7)).check_available("gemini-2.5-flash",
                                                                                           "supervised")


def test_reward_snippet_scores_like_the_verifier():
    """The snippet runs alone (as in Vertex's sandbox) on Vertex's shapes: the dataset line with
    ``references`` and the response as a Content; its reward is the project's verifier score."""
    from srl_assets.collaboration.verifier import Verifier
    from srl_assets.domains import get_domain
    from srl_assets.dynamic_example_generator import DynamicExampleGenerator
    from srl_assets.rules_integration import RulesIntegration
    from srl_assets.trajectory import render_trajectory
    from srl_assets.paid.grader import vertex_reward_snippet

    rules, domain = RulesIntegration().load("tree"), get_domain("tree")
    task = DynamicExampleGenerator(domain, rules).generate(1, "train", 0)[0]
    plan = domain.plan(task.params, rules)
    expert = render_trajectory(plan.steps, plan.spec)
    record = _record_for(task)
    namespace: dict = {}
    exec(compile(vertex_reward_snippet("tree", rules), "reward.py", "exec"), namespace)
    evaluate = namespace["evaluate"]
    content = lambda text: {"role": "model", "parts": [{"text": text}]}  # noqa: E731
    assert evaluate(record, content(expert)) == Verifier(domain, rules).verify_trajectory(task, expert).score == 1.0
    assert evaluate(record, content("1. **Final spec** {}")) == 0.0
    assert evaluate({"contents": record["contents"]}, content(expert)) == 0.0  # no task: no reward


def _record_for(task):
    from srl_assets.paid.vertex_provider import VertexFineTuner

    source = DatasetSource("tree", reinforcement=(ReinforcementItem(prompt="p", task=task.to_row()),))
    return VertexFineTuner(project="p").prepare_dataset("reinforcement", source, base_model=FLASH)[0]


def test_job_store_submit_survives_a_crash_and_the_candidate_scores_the_known_pass_rate(fake, tuner, store,
                                                                                       tmp_path):
    """The orchestration's own path (paid.job_store.submit / refresh, paid.evaluation) on Vertex."""
    from helpers.paid_data import MODEL_TYPE, good_fraction_responder, trajectory_rows
    from srl_assets.collaboration.lore_retriever import policy_prompts
    from srl_assets.collaboration.verifier import Verifier
    from srl_assets.paid.datasets import build_source
    from srl_assets.paid.evaluation import PaidEvalConfig, evaluate_paid
    from srl_assets.paid.job_store import JobStore, SubmitRequest, refresh, submit

    rows, tasks, domain, rules = trajectory_rows(10)
    source, _ = build_source(MODEL_TYPE, rows, tasks, domain, rules, lore_k=0)
    jobs = JobStore(store)
    req = SubmitRequest(MODEL_TYPE, "vertex", "gemini-2.5-flash", "supervised", {"epoch_count": 1},
                        max_spend_usd=5.0, cumulative_cap_usd=10.0, submit=True)
    first = submit(tuner, jobs, source, req, tmp_path)
    assert first.status == "submitted"
    jobs.upsert({"idempotency_key": first.key, "status": "intent", "job_id": None})  # crashed before recording
    n = len(fake.jobs)
    again = submit(tuner, jobs, source, req, tmp_path)
    assert (again.status, again.job_id, len(fake.jobs)) == ("already_submitted", first.job_id, n)

    row = jobs.get(first.key)
    while not (status := refresh(tuner, jobs, row)).terminal:
        pass
    assert jobs.get(first.key)["trained_tokens"] == fake.billable_tokens
    tuned = tuner.register(status)

    respond, good = good_fraction_responder(domain, rules, tasks, lore_k=0)
    previous, fake.responder = fake.responder, lambda p: respond({"messages": [{"role": "user", "content": p}]})
    try:
        result = evaluate_paid(tuner, tuned, "paid:vertex:test", tasks, policy_prompts(tasks, rules, 0),
                               Verifier(domain, rules), PaidEvalConfig(concurrency=2, timeout_s=10))
    finally:
        fake.responder = previous
    assert sum(r.passed for r in result.records) == good and 0 < good < len(tasks)
    assert result.input_tokens > 0 and result.cost_usd > 0


def test_settings_bucket_name_and_unknown_keywords(fake, monkeypatch):
    monkeypatch.delenv("SRL_VERTEX_BUCKET", raising=False)
    tuner = get_provider("vertex", client=fake.genai_client(), storage_client=fake.storage_client(),
                         project=fake.project, bucket="srl-tuning")
    assert tuner.upload([{"contents": []}], "plain") == "gs://srl-tuning/srl-paid/plain.jsonl"
    with pytest.raises(TypeError, match="unknown settings \\['gcs_uri'\\]"):
        get_provider("vertex", gcs_uri="gs://x")
    # A fixed bearer is for a stand-in at base_url only; Vertex itself always goes through ADC.
    with pytest.raises(ValueError, match="access_token is only accepted together with base_url"):
        get_provider("vertex", project="p", access_token="t")
    with pytest.raises(ValueError, match="SRL_VERTEX_BUCKET"):
        get_provider("vertex", client=fake.genai_client(), project="p", bucket="").upload([], "x")


def test_every_base_model_has_a_dated_sourced_price(tuner):
    for info in tuner.base_models():
        assert info.prices is not None and info.prices.source.startswith("https://") and info.prices.as_of, info.id
        assert info.prices.training_per_1m_tokens and info.prices.hosting_per_hour == 0.0  # per-token serving
