"""Bedrock model customization end to end: real boto3 clients talking to moto's server (control
plane, S3) behind a small loopback front for what moto lacks (deployments, provisioned throughput,
``converse``, job states that advance)."""

from __future__ import annotations

import json
import logging
from datetime import date

import pytest

from srl_assets.paid import get_provider
from srl_assets.paid.base import (ChatExample, DatasetFormatError, DatasetSource, PaidFineTuningError,
                                  PreferencePair, ProviderRefused)
from srl_assets.paid.bedrock_provider import job_name, request_token
from srl_assets.paid.datasets import SYSTEM_PROMPT
from helpers.fake_bedrock import ACCESS_KEY, SECRET_KEY

TODAY = date(2026, 12, 1)
ROLE = "arn:aws:iam::123456789012:role/srl-bedrock-customization"
NOVA, LLAMA, CLAUDE = "amazon.nova-lite-v1:0", "meta.llama3-1-8b-instruct-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"
SOURCE = DatasetSource(
    model_type="tree",
    sft=tuple(ChatExample(prompt=f"task {i}", completion=f"1. **Final spec** {{\"n\": {i}}}", system="write specs")
              for i in range(3)),
    preference=(PreferencePair(prompt="task 0", chosen="good", rejected="bad"),),
)


@pytest.fixture
def fake(bedrock_fake):
    """The session's Bedrock fake (helpers.paid_fakes): answers "answer to <prompt>", bucket srl-tuning."""
    return bedrock_fake


def make_tuner(fake, today=TODAY, allow_provisioned=True):
    return get_provider("bedrock", bedrock=fake.client("bedrock"), runtime=fake.client("bedrock-runtime"),
                        s3=fake.client("s3"), role_arn=ROLE, bucket="s3://srl-tuning/datasets",
                        clock=lambda: today, sleep=lambda s: None, deploy_poll_s=1, deploy_timeout_s=5,
                        allow_provisioned=allow_provisioned)


@pytest.fixture
def tuner(fake):
    return make_tuner(fake)


def _submit(tuner, key, base_model=NOVA, hyper=None):
    tuner.check_available(base_model, "supervised")
    records = tuner.prepare_dataset("supervised", SOURCE, base_model=base_model)
    tuner.validate_dataset("supervised", records, base_model=base_model)
    uri = tuner.upload(records, f"tree-{key}")
    return tuner.create_job(base_model=base_model, method="supervised", training_uri=uri,
                            hyperparameters=hyper if hyper is not None else {"n_epochs": 2},
                            idempotency_key=key, suffix="srl-tree")


def test_whole_cycle_nova_on_demand(fake, tuner, caplog):
    caplog.set_level(logging.DEBUG)
    tuner.check_available(NOVA, "supervised")
    records = tuner.prepare_dataset("supervised", SOURCE, base_model=NOVA)
    assert records[0] == {"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "write specs"}],
                          "messages": [{"role": "user", "content": [{"text": "task 0"}]},
                                       {"role": "assistant", "content": [{"text": '1. **Final spec** {"n": 0}'}]}]}
    tuner.validate_dataset("supervised", records, base_model=NOVA)
    estimate = tuner.estimate_cost(NOVA, "supervised", records, {"n_epochs": 2})
    assert estimate.usd == pytest.approx(estimate.training_tokens * 2 * 2.00 / 1e6, rel=1e-6)

    uri = tuner.upload(records, "tree-nova-cycle")
    body = fake.client("s3").get_object(Bucket="srl-tuning", Key="datasets/tree-nova-cycle.jsonl")["Body"].read()
    assert uri == "s3://srl-tuning/datasets/tree-nova-cycle.jsonl"
    assert [json.loads(line) for line in body.decode().splitlines()] == records

    handle = tuner.create_job(base_model=NOVA, method="supervised", training_uri=uri,
                              hyperparameters={"n_epochs": 2, "learning_rate": 1e-5, "max_hours": 3},
                              idempotency_key="tree:sft:nova", suffix="srl-tree")
    job = fake.jobs()[job_name("tree:sft:nova")]
    assert handle.job_id == job.job_arn and not handle.found_existing
    assert job.client_request_token == request_token("tree:sft:nova") == "tree-sft-nova"
    assert job.base_model_identifier == "amazon.nova-lite-v1:0:300k"
    assert job.hyper_parameters == {"epochCount": "2", "learningRate": "1e-05"}  # strings; max_hours stays local
    assert job.output_data_config["s3Uri"].startswith("s3://srl-tuning/datasets/output/")

    states = [tuner.poll(handle.job_id) for _ in range(3)]
    assert [s.state for s in states] == ["running", "running", "succeeded"]
    done = states[-1]
    assert done.tuned_model == job.output_model_arn and done.base_model == NOVA and done.error is None

    model = tuner.register(done)
    assert model.extra["serving"] == "on_demand" and model.model_id.endswith(":custom-model-deployment/"
                                                                              + model.model_id.rsplit("/", 1)[1])
    assert (model.input_per_1k_usd, model.output_per_1k_usd, model.hosting_per_hour_usd) == (0.00006, 0.00024, 0.0)
    assert tuner.register(done).model_id == model.model_id  # registering again reuses the deployment
    generations = tuner.generate(model.model_id, ["task 1", "task 2"], max_new_tokens=32)
    assert [g.text for g in generations] == ["answer to task 1", "answer to task 2"]
    assert all(g.input_tokens >= 1 and g.output_tokens >= 1 for g in generations)
    assert fake.converse_calls[-1]["body"]["inferenceConfig"] == {"maxTokens": 32, "temperature": 0.0}
    assert fake.converse_calls[-1]["body"]["system"] == [{"text": SYSTEM_PROMPT}]  # as in training
    tuner.release(model)
    assert model.model_id not in fake.deployments

    # The secret is in no log line (botocore's DEBUG included); neither key is in our own log
    # lines or in a record handed to the job store.
    assert SECRET_KEY not in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("srl_assets"))
    assert "bedrock: created customization job" in ours
    for text in (ours, repr(handle), repr(done), repr(model)):
        assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_llama_gets_provisioned_throughput_billed_per_hour(fake, tuner, monkeypatch):
    monkeypatch.delenv("SRL_BEDROCK_ALLOW_PROVISIONED", raising=False)
    handle = _submit(tuner, "tree:sft:llama", LLAMA, {"epoch_count": 1})
    records = tuner.prepare_dataset("supervised", SOURCE, base_model=LLAMA)
    assert records[0] == {"prompt": "write specs\n\ntask 0", "completion": '1. **Final spec** {"n": 0}'}
    while not (status := tuner.poll(handle.job_id)).terminal:
        pass
    with pytest.raises(PaidFineTuningError, match=r"billed \$23.50/h until released; set SRL_BEDROCK_ALLOW_PROVISIONED"):
        make_tuner(fake, allow_provisioned=None).register(status)  # off by default: hourly billing
    assert not any(d["modelArn"] == status.tuned_model for d in fake.deployments.values())
    model = tuner.register(status)
    assert model.extra["serving"] == "provisioned" and ":provisioned-model/" in model.model_id
    assert model.hosting_per_hour_usd == 23.50
    assert fake.deployments[model.model_id]["modelUnits"] == 1
    assert tuner.generate(model.model_id, ["hello"], 8)[0].text == "answer to hello"


def test_retried_create_finds_the_job(fake, tuner):
    first = _submit(tuner, "tree:retry")
    n = len(fake.jobs())
    again = _submit(tuner, "tree:retry")
    assert again.found_existing and again.job_id == first.job_id and len(fake.jobs()) == n
    assert tuner.find_job("tree:retry").job_id == first.job_id
    assert tuner.find_job("tree:never") is None


def test_create_race_returns_the_other_attempts_job(fake, tuner, monkeypatch):
    first = _submit(tuner, "tree:race")
    real_find = tuner.find_job
    calls = []
    # The other attempt created the job just after our lookup: our create hits a name conflict.
    monkeypatch.setattr(tuner, "find_job", lambda key: calls.append(key) or (real_find(key) if len(calls) > 1 else None))
    again = _submit(tuner, "tree:race")
    assert again.job_id == first.job_id and again.found_existing


def test_failed_job_surfaces_its_error(fake, tuner):
    fake.script_next_job(["InProgress", "Failed"], "Training data line 2: messages must alternate")
    handle = _submit(tuner, "tree:fails")
    assert tuner.poll(handle.job_id).error is None
    failed = tuner.poll(handle.job_id)
    assert (failed.state, failed.error) == ("failed", "Training data line 2: messages must alternate")
    with pytest.raises(PaidFineTuningError, match="not succeeded"):
        tuner.register(failed)


def test_unknown_state_is_unknown(fake, tuner, caplog):
    fake.script_next_job(["Queued", "Completed"])
    handle = _submit(tuner, "tree:unknown")
    first = tuner.poll(handle.job_id)
    assert (first.state, first.provider_state, first.terminal) == ("unknown", "Queued", False)
    assert "'Queued'" in caplog.text
    assert tuner.poll(handle.job_id).state == "succeeded"


def test_cancel(fake, tuner):
    handle = _submit(tuner, "tree:cancel")
    tuner.cancel(handle.job_id)
    assert tuner.poll(handle.job_id).state == "cancelled"


def test_claude_3_haiku_is_refused_after_its_end_of_life(fake):
    n = len(fake.jobs())
    with pytest.raises(ProviderRefused) as caught:
        _submit(make_tuner(fake, date(2026, 12, 1)), "tree:claude", CLAUDE, {"n_epochs": 2})
    assert (caught.value.provider, caught.value.model) == ("bedrock", CLAUDE)
    assert "no new jobs after 2026-09-09" in caught.value.reason and "end of life" in caught.value.reason
    assert len(fake.jobs()) == n
    # Before the date (an injected clock) the same call goes through, in Claude's own format.
    tuner = make_tuner(fake, date(2026, 9, 1))
    handle = _submit(tuner, "tree:claude", CLAUDE, {"n_epochs": 2, "batch_size": 8})
    assert fake.jobs()[job_name("tree:claude")].base_model_identifier == "anthropic.claude-3-haiku-20240307-v1:0:200k"
    assert tuner.prepare_dataset("supervised", SOURCE, base_model=CLAUDE)[0] == {
        "system": "write specs", "messages": [{"role": "user", "content": "task 0"},
                                              {"role": "assistant", "content": '1. **Final spec** {"n": 0}'}]}
    assert handle.base_model == CLAUDE


def test_a_region_that_retired_the_model_is_a_clear_refusal(fake):
    """Before the date in our table (injected clock) but in a region that already retired it."""
    tuner = make_tuner(fake, date(2026, 9, 1))
    fake.retired.add("anthropic.claude-3-haiku-20240307-v1:0:200k")
    try:
        with pytest.raises(ProviderRefused) as caught:
            _submit(tuner, "tree:claude-retired", CLAUDE, {"n_epochs": 2})
    finally:
        fake.retired.clear()
    assert (caught.value.provider, caught.value.model) == ("bedrock", CLAUDE)
    assert "ResourceNotFoundException" in caught.value.reason and "end of its life" in caught.value.reason


def test_methods_and_hyperparameters_are_checked(tuner):
    with pytest.raises(ProviderRefused, match="method 'preference' is not offered"):
        tuner.check_available(NOVA, "preference")
    with pytest.raises(ProviderRefused, match="Lambda grader"):
        tuner.prepare_dataset("reinforcement", SOURCE, base_model=NOVA)
    with pytest.raises(ValueError, match=r"epochCount=9 is outside \[1, 5\]"):
        _submit(tuner, "tree:hyper", NOVA, {"n_epochs": 9})
    with pytest.raises(ValueError, match="'learning_rate_multiplier' does not apply"):
        _submit(tuner, "tree:hyper", NOVA, {"learning_rate_multiplier": 1.0})
    # The format follows the base model named in the call, never one checked earlier.
    tuner.check_available(NOVA, "supervised")
    assert set(tuner.prepare_dataset("supervised", SOURCE, base_model=LLAMA)[0]) == {"prompt", "completion"}
    with pytest.raises(ProviderRefused, match="not a tunable base model"):
        tuner.prepare_dataset("supervised", SOURCE, base_model="amazon.titan-text-express-v1")


@pytest.mark.parametrize("base_model, mutate, rule", [
    (NOVA, lambda r: r["messages"].reverse(), "roles must alternate"),
    (NOVA, lambda r: r.update(schemaVersion="v1"), "schemaVersion must be 'bedrock-conversation-2024'"),
    (NOVA, lambda r: r["messages"][1]["content"].append({"image": {}}), "block 1 must be {'text'"),
    (NOVA, lambda r: r["messages"].pop(), "the last turn must be 'assistant'"),
    (NOVA, lambda r: r.update(extra=1), "keys not allowed: ['extra']"),
    (CLAUDE, lambda r: r["messages"][0].update(content=[{"text": "x"}]), "content must be a string for Claude"),
    (CLAUDE, lambda r: r["messages"].insert(0, {"role": "system", "content": "s"}), "roles must alternate"),
    (LLAMA, lambda r: r.update(completion=""), "completion must be a non-empty string"),
    (LLAMA, lambda r: r.update(prompt="x" * 70_000), "16000-token limit"),
])
def test_bad_dataset_names_example_and_rule(fake, base_model, mutate, rule):
    tuner = make_tuner(fake, date(2026, 9, 1))
    records = tuner.prepare_dataset("supervised", SOURCE, base_model=base_model)
    mutate(records[1])
    with pytest.raises(DatasetFormatError) as caught:
        tuner.validate_dataset("supervised", records, base_model=base_model)
    assert caught.value.index == 1 and rule in caught.value.rule, caught.value.rule


def test_job_store_submit_survives_a_crash_and_the_candidate_scores_the_known_pass_rate(fake, tuner, store,
                                                                                       tmp_path):
    """The orchestration's own path (paid.job_store.submit / refresh, paid.evaluation) on Bedrock."""
    from helpers.paid_data import MODEL_TYPE, good_fraction_responder, trajectory_rows
    from srl_assets.collaboration.lore_retriever import policy_prompts
    from srl_assets.collaboration.verifier import Verifier
    from srl_assets.paid.datasets import build_source
    from srl_assets.paid.evaluation import PaidEvalConfig, evaluate_paid
    from srl_assets.paid.job_store import JobStore, SubmitRequest, refresh, submit

    rows, tasks, domain, rules = trajectory_rows(10)
    source, _ = build_source(MODEL_TYPE, rows, tasks, domain, rules, lore_k=0)
    jobs = JobStore(store)
    req = SubmitRequest(MODEL_TYPE, "bedrock", NOVA, "supervised", {"n_epochs": 1},
                        max_spend_usd=5.0, cumulative_cap_usd=10.0, submit=True)
    first = submit(tuner, jobs, source, req, tmp_path)
    assert first.status == "submitted" and first.key.startswith("srl-")
    assert json.loads((tmp_path / f"bedrock-supervised-{first.key}.jsonl").read_text().splitlines()[0])[
        "schemaVersion"] == "bedrock-conversation-2024"  # the Nova format, from the request's base model
    jobs.upsert({"idempotency_key": first.key, "status": "intent", "job_id": None})  # crashed before recording
    n = len(fake.jobs())
    again = submit(tuner, jobs, source, req, tmp_path)
    assert (again.status, again.job_id, len(fake.jobs())) == ("already_submitted", first.job_id, n)

    row = jobs.get(first.key)
    while not (status := refresh(tuner, jobs, row)).terminal:
        pass
    tuned = tuner.register(status)
    respond, good = good_fraction_responder(domain, rules, tasks, lore_k=0)
    previous, fake.responder = fake.responder, lambda p: respond({"messages": [{"role": "user", "content": p}]})
    try:
        result = evaluate_paid(tuner, tuned, "paid:bedrock:test", tasks, policy_prompts(tasks, rules, 0),
                               Verifier(domain, rules), PaidEvalConfig(concurrency=2, timeout_s=10))
    finally:
        fake.responder = previous
    assert sum(r.passed for r in result.records) == good and 0 < good < len(tasks)
    assert result.output_tokens > 0 and result.cost_usd > 0


def test_built_from_the_dagster_resource_settings(fake, monkeypatch):
    """resources.paid passes region / role / bucket / endpoint URLs; boto3 finds the keys itself."""
    from resources.paid import PaidFineTuningResource

    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    tuner = PaidFineTuningResource(bedrock_region="us-east-1", bedrock_role_arn=ROLE, bedrock_bucket="srl-tuning",
                                   bedrock_endpoint_url=fake.endpoint_url,
                                   bedrock_runtime_endpoint_url=fake.endpoint_url,
                                   today="2026-12-01").provider("bedrock")
    handle = _submit(tuner, "tree-resource")
    assert fake.client("s3").get_object(Bucket="srl-tuning", Key="srl-paid/tree-tree-resource.jsonl")["ContentLength"]
    assert fake.jobs()[job_name("tree-resource")].role_arn == ROLE and handle.job_id.endswith(job_name("tree-resource"))
    with pytest.raises(TypeError, match="unknown settings \\['s3_uri'\\]"):
        get_provider("bedrock", s3_uri="s3://x")


def test_every_base_model_has_a_dated_sourced_price(tuner):
    from srl_assets.paid.bedrock_provider import _BY_ID, _FAMILIES

    for info in tuner.base_models():
        assert info.prices is not None and info.prices.source.startswith("https://") and info.prices.as_of, info.id
        # An hourly-served family must have an hourly price, or the selector would see it as free to host.
        if _FAMILIES[_BY_ID[info.id][2]].serving == "provisioned":
            assert info.prices.hosting_per_hour > 0, info.id
