"""paid_finetune_jobs, paid_finetune_sensor, paid_candidates and model_selection with the real
``openai`` SDK against the loopback fake; the clock is pinned so the tests outlive 2027-01-06."""

import json
import math
import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from helpers.fake_openai import FakeOpenAI
from helpers.paid_data import good_fraction_responder
from resources.checkpoint_store import LocalCheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.paid import PaidFineTuningResource
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from sensors.paid_finetune_sensor import build_paid_finetune_sensor
from srl_assets.assets.paid import paid_candidates, paid_finetune_jobs
from srl_assets.assets.performance import model_selection
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import trajectories
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.paid.job_store import JobStore
from srl_assets.paid.openai_provider import OpenAIFineTuner
from srl_assets.performance.performance_tracker import EvalRecord, PerformanceTracker, per_skill_rows, report_rows

MT = "personality"
SECRET = "sk-test-FAKE0000secret"
SUBMIT = {"dry_run": False, "opt_in_model_types": [MT]}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """One instance and a DuckDB file holding verified trajectories (copied per test)."""
    root = tmp_path_factory.mktemp("paid")
    db = root / "template.duckdb"
    with dg.instance_for_test() as instance:
        res = {"duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
               "teacher": TeacherResource(),
               "training": TrainingResource(work_root=str(root / "work"))}
        assert dg.materialize([rules, task_examples, trajectories], partition_key=MT, resources=res, instance=instance,
                              run_config={"ops": {"task_examples": {"config": {"n_train": 12, "n_eval": 4,
                                                                                "seed": 2}}}}).success
        yield instance, db


@pytest.fixture
def env(seeded, tmp_path, monkeypatch):
    instance, template = seeded
    db = tmp_path / "srl.duckdb"
    shutil.copy(template, db)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI(api_key=SECRET) as fake:
        resources = {
            "duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
            "training": TrainingResource(work_root=str(tmp_path / "work")),
            "checkpoint_store": LocalCheckpointStore(root=str(tmp_path / "checkpoints")),
            "paid": _paid(fake, "2026-12-01"),
        }
        yield instance, fake, resources, JobStore(resources["duckdb_store"])


def _paid(fake, today):
    return PaidFineTuningResource(openai_api_key=dg.EnvVar("OPENAI_API_KEY"), openai_base_url=fake.base_url,
                                  openai_max_retries=0, today=today)


def _jobs(instance, resources, config=None, raise_on_error=True):
    return dg.materialize([paid_finetune_jobs], partition_key=MT, resources=resources, instance=instance,
                          run_config={"ops": {"paid_finetune_jobs": {"config": config or {}}}},
                          raise_on_error=raise_on_error)


def _submits(fake):
    return fake.calls("POST", "/files") + fake.calls("POST", "/fine_tuning/jobs")


def test_dry_run_writes_datasets_and_estimate_and_calls_nothing(env, monkeypatch):
    instance, fake, resources, store = env
    monkeypatch.delenv("OPENAI_API_KEY")        # a dry run needs no key
    keyless = {**resources, "paid": PaidFineTuningResource(openai_base_url=resources["paid"].openai_base_url,
                                                           today="2026-12-01")}
    result = _jobs(instance, keyless)
    meta = result.asset_materializations_for_node("paid_finetune_jobs")[0].metadata
    assert meta["dry_run"].value is True and meta["sft_examples"].value == 12
    assert "dry_run" in meta["jobs"].value and "tokens ×" in meta["jobs"].value
    row = store.jobs().iloc[0]
    assert row.status == "dry_run" and row.estimate_usd > 0 and pd.isna(row.job_id)
    lines = open(row.dataset_path).read().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["messages"][-1]["role"] == "assistant"
    assert fake.requests == []          # not even a list call: nothing leaves the machine
    # Asking to submit for a model type that has not opted in is still a dry run.
    _jobs(instance, keyless, {"dry_run": False, "opt_in_model_types": ["sound"]})
    assert fake.requests == [] and list(store.jobs().status) == ["dry_run"]


def test_over_the_caps_nothing_is_submitted(env):
    instance, fake, resources, store = env
    result = _jobs(instance, resources, {**SUBMIT, "max_spend_usd": 0.0001}, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "over the per-job max_spend_usd cap of $0.00; nothing was submitted" in str(failure.event_specific_data.error)
    assert _submits(fake) == [] and store.jobs().empty
    # Cumulative: an earlier job's spend plus this estimate goes over the cap.
    store.upsert({"idempotency_key": "srl-earlier", "model_type": "sound", "status": "succeeded",
                  "estimate_usd": 99.999, "created_at": "0"})
    result = _jobs(instance, resources, {**SUBMIT, "cumulative_cap_usd": 100.0}, raise_on_error=False)
    assert not result.success and _submits(fake) == []


def test_refused_model_fails_with_provider_model_and_reason(env):
    instance, fake, resources, store = env
    late = {**resources, "paid": _paid(fake, "2027-01-07")}
    result = _jobs(instance, late, SUBMIT, raise_on_error=False)
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert ("openai refuses base model 'gpt-4.1-mini-2025-04-14': no new jobs after 2027-01-06"
            in str(failure.event_specific_data.error))
    assert _submits(fake) == []


def test_a_crash_between_create_and_record_creates_no_second_job(env, monkeypatch):
    instance, fake, resources, store = env
    real_create = OpenAIFineTuner.create_job

    def create_then_crash(self, **kwargs):
        real_create(self, **kwargs)
        raise SystemExit("process killed after create, before the job id was recorded")

    monkeypatch.setattr(OpenAIFineTuner, "create_job", create_then_crash)
    with pytest.raises(BaseException, match="process killed"):
        _jobs(instance, resources, SUBMIT)
    row = store.jobs().iloc[0]
    assert row.status == "intent" and pd.isna(row.job_id) and len(fake.jobs) == 1
    monkeypatch.setattr(OpenAIFineTuner, "create_job", real_create)
    assert _jobs(instance, resources, SUBMIT).success
    row = store.jobs().iloc[0]
    assert len(fake.jobs) == 1 and len(fake.calls("POST", "/fine_tuning/jobs")) == 1
    assert row.status == "submitted" and row.job_id == next(iter(fake.jobs))


def _sensor(instance, resources):
    sensor = build_paid_finetune_sensor(dg.define_asset_job("paid_finetune"), dg.define_asset_job("srl_pipeline"))
    ctx = dg.build_sensor_context(instance=instance, resources={k: resources[k] for k in ("duckdb_store", "paid")})
    return sensor(ctx)


def test_failed_job_records_the_provider_error(env):
    instance, fake, resources, store = env
    fake.job_script = ("validating_files", "failed")
    fake.job_error = {"code": "invalid_training_file", "message": "line 4: expected an assistant turn", "param": None}
    _jobs(instance, resources, SUBMIT)
    result = _sensor(instance, resources)
    assert not result.run_requests
    row = store.jobs().iloc[0]
    assert row.status == "failed" and "line 4: expected an assistant turn" in row.error
    assert store.pending().empty


def _fake_performance_report(instance, store: DuckDBStore, n: int, seed: int) -> str:
    """What performance_report leaves behind: its rows (a local 'rlvr' passing half) and its materialization."""
    domain, rules_ = RulesResource().load(MT)
    tasks = DynamicExampleGenerator(domain, rules_).generate(n, "eval", seed)
    records = [EvalRecord("rlvr", t.task_id, t.skills, i % 2 == 0, 1.0 if i % 2 == 0 else 0.5,
                          () if i % 2 == 0 else (t.skills[0],), True, 100, 0.5) for i, t in enumerate(tasks)]
    reports = PerformanceTracker().summarize(records, MT, list(domain.skills))
    store.append("performance_history", pd.DataFrame(report_rows(reports, report_id="rep1", model_type=MT,
                                                                 created_at="2026-12-01T00:00:00"))
                 .assign(seed=seed, rules_version=rules_.version))
    store.append("performance_skills", pd.DataFrame(per_skill_rows(reports, report_id="rep1", model_type=MT,
                                                                   created_at="2026-12-01T00:00:00")))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "performance_report", partition=MT, metadata={"report_id": "rep1", "seed": seed, "n_eval_tasks": n}))
    return "rep1"


def test_succeeded_job_becomes_an_evaluated_candidate_that_selection_weighs_by_cost(env):
    instance, fake, resources, store = env
    n, seed = 40, 9
    domain, rules_ = RulesResource().load(MT)
    tasks = DynamicExampleGenerator(domain, rules_).generate(n, "eval", seed)
    fake.responder, good = good_fraction_responder(domain, rules_, tasks, lore_k=0, fraction=0.7)
    fake.fail_next(2, 429, "/chat/completions")
    _jobs(instance, resources, SUBMIT)
    job_id = store.jobs().iloc[0].job_id
    fake.set_script(job_id, ["queued", "reticulating_splines", "running", "succeeded"])

    # The sensor: pending states are stored, an unknown state is polled again, success requests runs.
    for expected in ("queued", "unknown", "running"):
        result = _sensor(instance, resources)
        assert not result.run_requests and store.jobs().iloc[0].status == expected
    result = _sensor(instance, resources)
    assert [(r.job_name, r.partition_key, r.asset_selection) for r in result.run_requests] == [
        ("paid_finetune", MT, [dg.AssetKey("paid_candidates")]), ("srl_pipeline", MT, [dg.AssetKey("model_selection")])]
    assert store.jobs().iloc[0].trained_tokens > 0 and store.jobs().iloc[0].measured_usd > 0

    report_id = _fake_performance_report(instance, resources["duckdb_store"], n, seed)
    result = dg.materialize([paid_candidates], partition_key=MT, resources=resources, instance=instance,
                            run_config={"ops": {"paid_candidates": {"config": {"timeout_s": 10}}}})
    meta = result.asset_materializations_for_node("paid_candidates")[0].metadata
    assert meta["registered_now"].value == 1 and meta["evaluated"].value == 1 and meta["report_id"].value == report_id
    cand = store.candidates(MT).iloc[0]
    assert cand.candidate.startswith("paid:openai:") and cand.model_id.startswith("ft:gpt-4.1-mini")
    assert (cand.input_per_1k_usd, cand.output_per_1k_usd) == (0.0008, 0.0032)
    history = resources["duckdb_store"].read("performance_history", MT, "report_id = ?", [report_id])
    paid_row = history[history.candidate == cand.candidate].iloc[0]
    assert paid_row.n == n and paid_row.passed == good
    assert abs(paid_row.pass_rate - 0.7) <= 3 * math.sqrt(0.21 / n)
    assert len(fake.calls("POST", "/chat/completions")) == n + 2      # two 429s retried

    cheap = _select(instance, resources, 0.1)
    assert cheap.chosen == cand.candidate and f"paid '{cand.candidate}'" in cheap.explanation
    # The same evidence with cost weighed 1000×: the paid model's real price now outweighs its quality.
    dear = _select(instance, resources, 100.0)
    assert dear.chosen == "rlvr" and dear.runner_up == cand.candidate

    # Secrets: the key is in the environment the SDK used, and nowhere the platform writes.
    seen = _written_by_platform(instance, resources, store)
    seen.append(json.dumps([r.body for r in fake.requests], default=str))
    assert seen and not any(SECRET in s for s in seen)


def _select(instance, resources, cost_weight):
    """model_selection's overall row for the partition, with ``cost_weight``."""
    dg.materialize([model_selection], partition_key=MT, instance=instance,
                   resources={"duckdb_store": resources["duckdb_store"]},
                   run_config={"ops": {"model_selection": {"config": {"cost_weight": cost_weight}}}})
    rows = resources["duckdb_store"].read("model_selection", MT)
    return rows[rows.skill == "overall"].iloc[0] if "overall" in set(rows.skill) else rows.iloc[0]


def _written_by_platform(instance, resources, store) -> list[str]:
    """Every run's event log, every DuckDB table and every dataset file, as text."""
    seen = []
    for run in instance.get_runs():
        seen += [json.dumps(str(e.dagster_event or e.user_message)) for e in instance.all_logs(run.run_id)]
    with duckdb.connect(resources["duckdb_store"].database, read_only=True) as conn:
        for (table,) in conn.execute("SELECT table_name FROM information_schema.tables").fetchall():
            seen.append(conn.execute(f"SELECT * FROM {table}").df().to_csv())
    seen += [open(p).read() for p in store.jobs().dataset_path]
    return seen


# ------------------------------------------------------------------- Vertex and Bedrock, same cycle
# Each provider is configured only through PaidFineTuningResource, as the code location does, with
# its URLs pointed at the loopback fakes: the real google-genai / google-cloud-storage / boto3
# clients are built by the providers themselves.
# The fakes are the session's (helpers.paid_fakes), shared with test_paid_vertex / test_paid_bedrock.
VERTEX_TOKEN_ENV, N_EVAL, EVAL_SEED = "SRL_VERTEX_ACCESS_TOKEN", 20, 9


# A case returns (fake, the resource, the job spec, the secret that must never show, count of the fake's jobs).
def _vertex_case(request, monkeypatch):
    from helpers.fake_vertex import TOKEN

    fake = request.getfixturevalue("vertex_fake")
    monkeypatch.setenv(VERTEX_TOKEN_ENV, TOKEN)
    paid = PaidFineTuningResource(vertex_project=fake.project, vertex_location=fake.location,
                                  vertex_bucket="gs://srl-tuning/paid", vertex_base_url=fake.base_url,
                                  gcs_endpoint=fake.storage_url, vertex_access_token=dg.EnvVar(VERTEX_TOKEN_ENV),
                                  today="2026-12-01")
    # pending, then a state this code does not know (polled again), then done
    fake.script_next_job(["JOB_STATE_PENDING", "JOB_STATE_SOMETHING_NEW", "JOB_STATE_SUCCEEDED"])
    spec = {"provider": "vertex", "base_model": "gemini-2.5-flash", "hyperparameters": {"epoch_count": 1}}
    return fake, paid, spec, TOKEN, lambda: len(fake.jobs)


def _bedrock_case(request, monkeypatch):
    from helpers.fake_bedrock import ACCESS_KEY, SECRET_KEY

    fake = request.getfixturevalue("bedrock_fake")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)       # boto3's own lookup, as in production
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    paid = PaidFineTuningResource(bedrock_region=fake.region, bedrock_bucket="s3://srl-tuning/paid",
                                  bedrock_role_arn="arn:aws:iam::123456789012:role/srl-bedrock-customization",
                                  bedrock_endpoint_url=fake.endpoint_url,
                                  bedrock_runtime_endpoint_url=fake.endpoint_url,
                                  bedrock_deploy_poll_s=0.01, today="2026-12-01")
    fake.script_next_job(["InProgress", "Queued", "Completed"])  # "Queued" is no Bedrock state: unknown
    spec = {"provider": "bedrock", "base_model": "amazon.nova-lite-v1:0", "hyperparameters": {"n_epochs": 1}}
    return fake, paid, spec, SECRET_KEY, lambda: len(fake.jobs())


@pytest.mark.parametrize("case", [_vertex_case, _bedrock_case], ids=["vertex", "bedrock"])
def test_vertex_and_bedrock_go_through_the_whole_cycle_in_the_assets(case, seeded, tmp_path, monkeypatch,
                                                                     request):
    """paid_finetune_jobs submits → the sensor polls to success and requests paid_candidates →
    paid_candidates registers and evaluates the tuned model to the fake's known pass rate →
    model_selection weighs its real price."""
    instance, template = seeded
    fake, paid, spec, secret, created = case(request, monkeypatch)
    db = tmp_path / "srl.duckdb"
    shutil.copy(template, db)
    resources = {"duckdb_store": DuckDBStore(database=str(db)), "rules_resource": RulesResource(),
                 "training": TrainingResource(work_root=str(tmp_path / "work")), "paid": paid,
                 "checkpoint_store": LocalCheckpointStore(root=str(tmp_path / "checkpoints"))}
    store = JobStore(resources["duckdb_store"])
    before = created()

    _jobs(instance, resources, {**SUBMIT, "jobs": [spec]})
    row = store.jobs().iloc[0]
    assert (row.provider, row.status, created()) == (spec["provider"], "submitted", before + 1)
    assert _jobs(instance, resources, {**SUBMIT, "jobs": [spec]}).success and created() == before + 1  # retried op

    for expected in ("queued" if spec["provider"] == "vertex" else "running", "unknown"):
        result = _sensor(instance, resources)
        assert not result.run_requests and store.jobs().iloc[0].status == expected
    result = _sensor(instance, resources)
    assert [(r.job_name, r.partition_key, r.asset_selection) for r in result.run_requests][0] == (
        "paid_finetune", MT, [dg.AssetKey("paid_candidates")])

    domain, rules_ = RulesResource().load(MT)
    tasks = DynamicExampleGenerator(domain, rules_).generate(N_EVAL, "eval", EVAL_SEED)
    respond, good = good_fraction_responder(domain, rules_, tasks, lore_k=0, fraction=0.7)
    # Both fakes hand the responder the user text; the system prompt travels separately.
    monkeypatch.setattr(fake, "responder", lambda prompt: respond({"messages": [{"role": "user", "content": prompt}]}))
    report_id = _fake_performance_report(instance, resources["duckdb_store"], N_EVAL, EVAL_SEED)
    result = dg.materialize([paid_candidates], partition_key=MT, resources=resources, instance=instance,
                            run_config={"ops": {"paid_candidates": {"config": {"timeout_s": 10}}}})
    meta = result.asset_materializations_for_node("paid_candidates")[0].metadata
    assert meta["registered_now"].value == 1 and meta["evaluated"].value == 1
    cand = store.candidates(MT).iloc[0]
    tuner = paid.provider(spec["provider"])
    prices = tuner.prices(spec["base_model"])
    assert cand.candidate.startswith(f"paid:{spec['provider']}:")
    assert (cand.input_per_1k_usd, cand.output_per_1k_usd) == (prices.input_per_1k, prices.output_per_1k)
    history = resources["duckdb_store"].read("performance_history", MT, "report_id = ?", [report_id])
    paid_row = history[history.candidate == cand.candidate].iloc[0]
    assert paid_row.n == N_EVAL and paid_row.passed == good and 0 < good < N_EVAL
    evaluation = resources["duckdb_store"].read("paid_evaluations", MT).iloc[-1]
    assert evaluation.cost_usd > 0 and evaluation.input_tokens > 0

    cheap = _select(instance, resources, 0.1)
    assert cheap.chosen == cand.candidate and f"paid '{cand.candidate}'" in cheap.explanation
    # Weighed hard enough, the same real price outweighs the better quality (local candidates cost 0).
    dear = _select(instance, resources, 1e4)
    assert dear.chosen == "rlvr" and dear.runner_up == cand.candidate

    seen = _written_by_platform(instance, resources, store)
    assert seen and not any(secret in s for s in seen)


def test_vertex_reinforcement_is_sent_the_verifier_reward_snippet(seeded, tmp_path, monkeypatch, request):
    """As for OpenAI's python grader, paid_finetune_jobs generates Vertex's reward snippet itself."""
    from srl_assets.paid.grader import vertex_reward_snippet

    instance, template = seeded
    fake, paid, spec, _, _ = _vertex_case(request, monkeypatch)
    shutil.copy(template, tmp_path / "srl.duckdb")
    resources = {"duckdb_store": DuckDBStore(database=str(tmp_path / "srl.duckdb")), "rules_resource": RulesResource(),
                 "training": TrainingResource(work_root=str(tmp_path / "work")), "paid": paid,
                 "checkpoint_store": LocalCheckpointStore(root=str(tmp_path / "checkpoints"))}
    _jobs(instance, resources, {**SUBMIT, "method": "reinforcement", "jobs": [spec]})
    job = fake.jobs[JobStore(resources["duckdb_store"]).jobs().iloc[0].job_id]
    scorer = job.body["reinforcementTuningSpec"]["singleRewardConfig"]["codeExecutionRewardScorer"]
    sent = scorer.get("pythonCodeSnippet", scorer.get("python_code_snippet"))
    assert sent == vertex_reward_snippet(MT, RulesResource().load(MT)[1])
    assert "references" in sent and "def evaluate(example, response)" in sent
