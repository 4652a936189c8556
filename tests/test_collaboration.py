"""LoreRetriever, TeacherPlanner and CollaborationOrchestrator."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from srl_assets.collaboration.collaboration_orchestrator import CollaborationOrchestrator
from srl_assets.collaboration.lore_retriever import LoreRetriever
from srl_assets.collaboration.teacher_planner import TeacherPlanner, make_teacher
from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.rules_integration import RulesIntegration


@pytest.fixture(scope="module")
def plant():
    rules = RulesIntegration().load("plant")
    domain = get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(12, "train", 4)
    return domain, rules, tasks


def test_retriever_ranks_the_task_family_and_biome_first(plant):
    _, rules, tasks = plant
    retriever = LoreRetriever(rules, k=3)
    for task in tasks:
        hits = retriever.retrieve(task)
        ids = [h.rule_id for h in hits]
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score > 0
        assert f"plant.family.{task.params['family']}" in ids or f"plant.biome.{task.params['biome']}" in ids


class FlakyTeacher(TeacherPlanner):
    """Breaks the spec on the first attempt of every other task, then answers properly."""

    def __init__(self, domain, rules, fail_always=()):
        super().__init__(domain, rules)
        self.inner = make_teacher("procedural", domain, rules)
        self.fail_always = set(fail_always)
        self.calls = 0

    def plan(self, task, lore, attempt=0):
        self.calls += 1
        text = self.inner.plan(task, lore, attempt)
        if task.task_id in self.fail_always or (attempt == 0 and self.calls % 2 == 0):
            return text.replace('"edibility": "', '"edibility": "x')
        return text


def test_orchestrator_retries_keeps_only_verified_and_counts_reasons(plant):
    domain, rules, tasks = plant
    teacher = FlakyTeacher(domain, rules, fail_always={tasks[0].task_id})
    result = CollaborationOrchestrator(LoreRetriever(rules), teacher, Verifier(domain, rules), max_attempts=2).run(tasks)
    assert result.rejected_tasks == [tasks[0].task_id]
    assert len(result.accepted) == len(tasks) - 1
    assert all(a.verdict.passed for a in result.accepted)
    assert result.rejection_reasons["family_edibility"] == result.rejected_attempts >= 2
    assert any(a.attempts == 2 for a in result.accepted)


def test_openai_compatible_teacher_goes_through_the_verifier(plant):
    domain, rules, tasks = plant
    good = make_teacher("procedural", domain, rules).plan(tasks[0], [])
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["auth"] = self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            content = good if seen["body"]["messages"][0]["content"].endswith(tasks[0].prompt) else "no"
            payload = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        teacher = make_teacher("openai", domain, rules, base_url=f"http://127.0.0.1:{server.server_port}/v1",
                               model="teacher-x", api_key="sk-secret")
        assert "sk-secret" not in repr(teacher)
        result = CollaborationOrchestrator(LoreRetriever(rules), teacher, Verifier(domain, rules),
                                           max_attempts=1).run(tasks[:3])
    finally:
        server.shutdown()
    assert seen["auth"] == "Bearer sk-secret" and seen["body"]["model"] == "teacher-x"
    assert [a.task.task_id for a in result.accepted] == [tasks[0].task_id]
    assert result.rejection_reasons["format"] == 2


def test_unknown_teacher_is_named(plant):
    domain, rules, _ = plant
    with pytest.raises(ValueError, match="unknown teacher 'gpt'"):
        make_teacher("gpt", domain, rules)
