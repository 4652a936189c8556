"""The OpenAI-compatible teacher end to end: the official ``openai`` SDK over HTTP to a loopback fake,
tenacity retries on 429/5xx, a per-call timeout, its own key only, and the ``trajectories`` asset
rejecting the tasks the teacher keeps failing on (failing only when every task fails, with the
provider's error)."""

import time

import dagster as dg
import pytest

from helpers.fake_openai import FakeOpenAI
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import trajectories
from srl_assets.collaboration.lore_retriever import LoreRetriever
from srl_assets.collaboration.teacher_planner import TeacherError, make_teacher, teacher_prompt
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.rules_integration import RulesIntegration

MODEL_TYPE = "tree"
N_TRAIN = 4


def _expert(model_type: str = MODEL_TYPE, lore_k: int = 2):
    """A responder that answers each task's teacher prompt with the procedural expert's trajectory
    (what a strong LLM would write), and the tasks it knows."""
    domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
    procedural = make_teacher("procedural", domain, rules)
    retriever = LoreRetriever(rules, k=lore_k)
    answers = {}
    for split, n in (("train", N_TRAIN), ("eval", 2)):
        for task in DynamicExampleGenerator(domain, rules).generate(n, split, seed=7):
            lore = retriever.retrieve(task)
            answers[teacher_prompt(task, lore)] = procedural.plan(task, lore)
    return answers


def _materialize(tmp_path, teacher: TeacherResource, raise_on_error=True):
    resources = {"duckdb_store": DuckDBStore(database=str(tmp_path / "srl.duckdb")),
                 "rules_resource": RulesResource(), "teacher": teacher}
    with dg.instance_for_test() as instance:
        return dg.materialize([rules, task_examples, trajectories], partition_key=MODEL_TYPE, instance=instance,
                              resources=resources, raise_on_error=raise_on_error,
                              run_config={"ops": {"task_examples": {"config": {"n_train": N_TRAIN, "n_eval": 2,
                                                                                "seed": 7}}}})


def test_retries_on_429_and_5xx_then_one_task_rejected_with_its_reason(tmp_path, monkeypatch):
    answers = _expert()
    bad_prompt = sorted(answers)[0]  # the provider fails on this task every time

    def respond(request):
        prompt = request["messages"][-1]["content"]
        if prompt == bad_prompt:
            raise RuntimeError("model overloaded")
        return answers[prompt]

    # Another provider's key in the environment must never be sent in place of the teacher's own.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other-provider")
    with FakeOpenAI(responder=respond, api_key="sk-teacher-own") as fake:
        fake.fail_next(1, status=429, path_prefix="/chat/completions")
        fake.fail_next(1, status=503, path_prefix="/chat/completions")
        teacher = TeacherResource(kind="openai", base_url=fake.base_url, model="teacher-model",
                                  api_key="sk-teacher-own", max_retries=3, backoff_s=0.01)
        result = _materialize(tmp_path, teacher)
        calls = fake.calls("POST", "/chat/completions")
    meta = result.asset_materializations_for_node("trajectories")[0].metadata
    train_tasks = [p for p in answers if p in {c.body["messages"][-1]["content"] for c in calls}]
    assert meta["accepted"].value + meta["rejected"].value == N_TRAIN
    assert meta["rejected"].value == 1 and meta["accepted"].value == N_TRAIN - 1
    assert "teacher_InternalServerError_500" in meta["rejection_reasons"].value
    # The bad task: 1 call + 3 retries, then rejected; the injected 429 and 503 were retried.
    assert sum(c.body["messages"][-1]["content"] == bad_prompt for c in calls) == 4
    assert len(calls) == 4 + (N_TRAIN - 1) + 2 and len(train_tasks) == N_TRAIN
    assert all(c.body["model"] == "teacher-model" for c in calls)


def test_every_task_failing_fails_the_asset_with_the_providers_error(tmp_path):
    with FakeOpenAI(responder=lambda r: "unused", api_key="sk-right") as fake:
        # A wrong key (401) is not retried: each task is asked once, and the asset fails with it.
        teacher = TeacherResource(kind="openai", base_url=fake.base_url, model="m", api_key="sk-wrong",
                                  max_retries=3, backoff_s=0.01)
        result = _materialize(tmp_path, teacher, raise_on_error=False)
        assert len(fake.calls("POST", "/chat/completions")) == N_TRAIN
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                   and e.step_key == "trajectories")
    message = failure.event_specific_data.error.cause.message if failure.event_specific_data.error.cause else \
        failure.event_specific_data.error.message
    assert "failed on all 4 tasks" in message and "AuthenticationError" in message
    assert "Incorrect API key" in message and "sk-wrong" not in message


def test_per_call_timeout_counts_as_a_failed_call():
    domain, rules = get_domain(MODEL_TYPE), RulesIntegration().load(MODEL_TYPE)
    task = DynamicExampleGenerator(domain, rules).generate(1, "train", seed=1)[0]
    with FakeOpenAI(responder=lambda r: "late", api_key="k", latency_s=1.0) as fake:
        teacher = make_teacher("openai", domain, rules, base_url=fake.base_url, model="m", api_key="k",
                               timeout_s=0.2, max_retries=1, backoff_s=0.01)
        start = time.monotonic()
        with pytest.raises(TeacherError) as info:
            teacher.plan(task, [])
        assert time.monotonic() - start < 1.9  # two calls of 0.2 s, not two of 1 s
    assert info.value.reason == "teacher_APITimeoutError" and "2 call(s)" in str(info.value)
