"""The serving API as a real uvicorn process on loopback, exercised over HTTP with httpx.

One instance (a temporary Dagster home) holds what the pipeline would have written: performance
reports and selections for plant (the scripted teacher is selected), animal (a scripted candidate whose
trajectories are mutated is selected) and tree (a real tiny checkpoint, stage ``rlvr``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import httpx
import pandas as pd
import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.uvicorn_server import base_env, publish_tiny_checkpoint, serving_server, start_expecting_exit, write_report

from srl_assets.domains import get_domain
from srl_assets.rules_integration import RulesIntegration

READ, TRAIN = "read-key-0123", "train-key-4567"
HOOK = "srl_assets.serving.scripted:register"
TEACHER, MUTATED = "scripted:teacher", "scripted:mutated"
PLANT = {"family": "rosaceae", "biome": "grassland", "growth_form": "shrub", "ask_flowering": True, "soil": "silt"}
BUILDING = {"function": "house", "floors": 2, "culture": "nordic"}
PAID = "paid:openai:1a2b3c4d"
ANIMAL = {"class": "mammal", "diet": "carnivore", "habitat": "forest", "size": "medium", "ask_danger": True,
          "ask_moves": False}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _evidence(model_type: str, good: str, bad: str) -> dict:
    skills = get_domain(model_type).skills
    return {good: {s: (19, 20) for s in skills}, bad: {s: (4, 20) for s in skills}}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("serving_home")
    db = str(home / "srl.duckdb")
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    write_report(db, "plant", "plant-r1", _evidence("plant", TEACHER, MUTATED), created_at=t0)
    write_report(db, "animal", "animal-r1", _evidence("animal", MUTATED, TEACHER), created_at=t0)
    write_report(db, "building", "building-r1", _evidence("building", PAID, TEACHER), created_at=t0)
    with duckdb.connect(db) as conn:  # what paid_candidates registers for a succeeded fine-tune
        rows = pd.DataFrame([{"model_type": "building", "candidate": PAID, "provider": "openai",
                              "model_id": "ft:gpt-4o-mini:acme::abc", "input_per_1k_usd": 0.3,
                              "output_per_1k_usd": 1.2, "hosting_per_hour_usd": 0.0}])
        conn.execute("CREATE TABLE paid_candidates AS SELECT * FROM rows")
    publish_tiny_checkpoint(home, "tree", "rlvr")
    skills = get_domain("tree").skills
    with duckdb.connect(db) as conn:  # an SRL checkpoint whose files are gone from the store
        conn.execute("INSERT INTO checkpoints VALUES ('tree', 'srl', 'srl/tree/gone', 'file:///nowhere', ?, 1, 'r0', ?)",
                     ["0" * 64, (datetime.now(timezone.utc) - timedelta(minutes=2)).isoformat()])
    write_report(db, "tree", "tree-r1", {"rlvr": {s: (10, 20) for s in skills}, "srl": {s: (2, 20) for s in skills}},
                 created_at=datetime.now(timezone.utc))
    return home


@pytest.fixture(scope="module")
def fake_openai():
    """A loopback OpenAI API whose chat completions answer with the teacher's trajectory for BUILDING."""
    from srl_assets.trajectory import render_trajectory

    plan = get_domain("building").plan(BUILDING, RulesIntegration().load("building"))
    with FakeOpenAI(responder=lambda request: render_trajectory(plan.steps, plan.spec)) as fake:
        yield fake


@pytest.fixture(scope="module")
def server_info() -> dict:
    return {}


@pytest.fixture(scope="module")
def server(home, fake_openai, tmp_path_factory, server_info):
    env = base_env(home, SRL_API_KEYS=f"{READ},{TRAIN}:train", SRL_SERVING_TEST_GENERATORS=HOOK,
                   OPENAI_API_KEY=fake_openai.api_key, OPENAI_BASE_URL=fake_openai.base_url,
                   SRL_API_SELECTION_TTL_S="0.3", SRL_API_DUCKDB_TIMEOUT_S="1", SRL_API_MAX_BODY_BYTES="4096")
    with serving_server(env, tmp_path_factory.mktemp("logs") / "uvicorn.log", info=server_info) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


# ----------------------------------------------------------------------------------------------
# Auth, docs, health


def test_health_needs_no_key_and_docs_are_served(client):
    assert client.get("/health").json() == {"status": "ok"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert all(p.startswith("/v1/") for p in paths if p != "/health")
    assert {"/v1/generate", "/v1/models", "/v1/examples", "/v1/status", "/v1/render"} <= set(paths)


@pytest.mark.parametrize("method, path, headers, body, status", [
    ("GET", "/v1/models", {}, None, 401),                                      # no key
    ("GET", "/v1/models", _auth("not-a-key"), None, 401),                      # wrong key
    ("GET", "/v1/models", {"Authorization": "Basic abc"}, None, 401),         # not a bearer key
    ("PUT", "/v1/models/sound/pin", _auth(READ), {"candidate": TEACHER, "reason": "x"}, 403),  # read key, train route
    ("GET", "/v1/models", _auth(READ), None, 200),                             # right key
    ("PUT", "/v1/models/sound/pin", _auth(TRAIN), {"candidate": TEACHER, "reason": "auth matrix"}, 200),
])
def test_auth_matrix(client, method, path, headers, body, status):
    response = client.request(method, path, headers=headers, json=body)
    assert response.status_code == status, response.text
    if status == 401:
        assert "Bearer" in response.json()["detail"] and response.headers["WWW-Authenticate"] == "Bearer"
    if status == 403:
        assert "'train' scope" in response.json()["detail"]


def test_refuses_to_start_without_keys(home):
    code, out = start_expecting_exit(base_env(home))
    assert code != 0 and "SRL_API_KEYS" in out and "SRL_API_ALLOW_UNAUTHENTICATED" in out
    code, out = start_expecting_exit(base_env(home, SRL_API_ALLOW_UNAUTHENTICATED="1", SRL_API_HOST="0.0.0.0"))
    assert code != 0 and "only allowed when bound to 127.0.0.1" in out


# ----------------------------------------------------------------------------------------------
# Bad input: status and a message naming the field or resource


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/generate", {"model_type": "dragon", "params": {}}, 404, "unknown model type 'dragon'"),
    ("/v1/generate", {"model_type": "plant", "params": {**PLANT, "colour": "red"}}, 422, "params.colour: unknown parameter"),
    ("/v1/generate", {"model_type": "plant", "params": {**PLANT, "family": "dragonwort"}}, 422,
     "params.family: unknown family 'dragonwort'"),
    ("/v1/generate", {"model_type": "plant", "params": {**PLANT, "max_height_m": 900}}, 422,
     "params.max_height_m: 900 is outside the rules' range"),
    ("/v1/generate", {"model_type": "plant", "params": {k: v for k, v in PLANT.items() if k != "biome"}}, 422,
     "params.biome: is required"),
    ("/v1/generate", {"model_type": "plant", "params": PLANT, "n": 1000}, 422, "n: 1000 is above the limit"),
    ("/v1/generate", {"model_type": "plant", "params": PLANT, "max_new_tokens": 100000}, 422,
     "max_new_tokens: 100000 is above the limit"),
    ("/v1/generate", {"model_type": "plant", "params": PLANT, "n": 0}, 422, "n: Input should be greater than"),
    ("/v1/generate", {"model_type": "plant"}, 422, "params: Field required"),
    ("/v1/generate", {"model_type": "plant", "params": {"x": "y" * 5000}}, 413, "larger than the limit of 4096"),
    ("/v1/examples", {"model_type": "plant", "n": 1001}, 422, "n: 1001 is above the limit of 1000"),
    ("/v1/examples", {"model_type": "plant", "skill_weights": {"flying": 2.0}}, 422, "unknown skills"),
    ("/v1/examples", {"model_type": "dragon"}, 404, "unknown model type 'dragon'"),
    ("/v1/render", {"model_type": "dragon", "spec": {}}, 404, "unknown model type 'dragon'"),
])
def test_bad_inputs(client, path, body, status, message):
    response = client.post(path, json=body, headers=_auth(READ))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize("method, path, body, status, message", [
    ("GET", "/v1/models?model_type=dragon", None, 404, "unknown model type 'dragon'"),
    ("PUT", "/v1/models/plant/pin", {"candidate": "nobody", "reason": "x"}, 404, "unknown candidate 'nobody'"),
    ("PUT", "/v1/models/plant/pin", {"candidate": TEACHER}, 422, "reason: Field required"),
    ("DELETE", "/v1/models/tree/pin?reason=x", None, 404, "'tree' has no pin to remove"),
    ("POST", "/v1/models/facial/rollback", {"reason": "x"}, 404, "no previous serving state"),
])
def test_bad_model_requests(client, method, path, body, status, message):
    response = client.request(method, path, json=body, headers=_auth(TRAIN))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


# ----------------------------------------------------------------------------------------------
# Examples


def test_examples_are_deterministic_with_a_seed(client):
    body = {"model_type": "building", "n": 5, "seed": 7}
    first = client.post("/v1/examples", json=body, headers=_auth(READ)).json()
    again = client.post("/v1/examples", json=body, headers=_auth(READ)).json()
    other = client.post("/v1/examples", json={**body, "seed": 8}, headers=_auth(READ)).json()
    assert first == again and first["examples"] != other["examples"]
    domain, rules = get_domain("building"), RulesIntegration().load("building")
    for ex in first["examples"]:
        domain.validate_params(ex["params"], rules)  # what /v1/examples hands out, /v1/generate accepts
        assert ex["skills"] == domain.task_skills(ex["params"], rules) and ex["prompt"].startswith("Task: ")


# ----------------------------------------------------------------------------------------------
# Generation


def test_generate_with_the_teacher_candidate_returns_a_verified_spec(client):
    response = client.post("/v1/generate", json={"model_type": "plant", "params": PLANT, "n": 2},
                           headers=_auth(READ))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["candidate"]["name"] == TEACHER and body["samples_tried"] == 1 and "fallback" not in body
    assert body["verdict"] == {"passed": True, "score": 1.0, "failed_skills": [], "failures": []}
    domain, rules = get_domain("plant"), RulesIntegration().load("plant")
    assert body["spec"] == domain.plan(PLANT, rules).spec
    assert body["task"]["skills"] == domain.task_skills(PLANT, rules)


def test_generate_with_a_mutated_candidate_is_409_naming_the_failed_skill(client):
    response = client.post("/v1/generate", json={"model_type": "animal", "params": ANIMAL, "n": 3},
                           headers=_auth(READ))
    assert response.status_code == 409, response.text
    body = response.json()
    first_skill = get_domain("animal").task_skills(ANIMAL, RulesIntegration().load("animal"))[0]
    assert body["samples_tried"] == 3 and body["candidate"]["name"] == MUTATED
    assert first_skill in body["best_verdict"]["failed_skills"] and first_skill in body["detail"]
    assert "spec" not in body


def test_generate_on_a_real_tiny_checkpoint_is_well_formed(client, home):
    catalog = duckdb.connect(str(home / "srl.duckdb"), read_only=True).execute(
        "SELECT key, sha256 FROM checkpoints WHERE model_type = 'tree'").fetchone()
    params = client.post("/v1/examples", json={"model_type": "tree", "n": 1, "seed": 3},
                         headers=_auth(READ)).json()["examples"][0]["params"]
    response = client.post("/v1/generate", json={"model_type": "tree", "params": params, "n": 2,
                                                  "max_new_tokens": 24}, headers=_auth(READ))
    assert response.status_code in (200, 409), response.text
    body = response.json()
    assert body["candidate"] == {"name": "rlvr", "kind": "local", "stage": "rlvr", "checkpoint_key": catalog[0],
                                 "checkpoint_sha256": catalog[1]}
    assert body["samples_tried"] in (1, 2) and body["tokens"]["output"] > 0
    verdict = body["verdict"] if response.status_code == 200 else body["best_verdict"]
    assert verdict["passed"] is (response.status_code == 200)
    status = client.get("/v1/status", headers=_auth(READ)).json()
    assert status["models_loaded"] == [{"checkpoint_key": catalog[0], "sha256": catalog[1]}]
    assert status["duckdb"]["readable"] is True and status["dagster"]["reachable"] is False
    assert {"model_type": "tree", "report_id": "tree-r1"}.items() <= \
        next(r for r in status["latest_reports"] if r["model_type"] == "tree").items()


def test_generate_routes_to_a_selected_paid_candidate(client, fake_openai):
    response = client.post("/v1/generate", json={"model_type": "building", "params": BUILDING, "n": 1},
                           headers=_auth(READ))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["candidate"] == {"name": PAID, "kind": "paid", "provider": "openai",
                                 "model_id": "ft:gpt-4o-mini:acme::abc"}
    assert body["verdict"]["passed"] and body["tokens"]["input"] > 0 and body["tokens"]["output"] > 0
    call = [r for r in fake_openai.requests if r.path.endswith("/chat/completions")][-1]
    assert call.body["model"] == "ft:gpt-4o-mini:acme::abc"
    models = client.get("/v1/models", params={"model_type": "building"}, headers=_auth(READ)).json()
    paid = next(c for c in models["model_types"][0]["candidates"] if c["name"] == PAID)
    assert paid["kind"] == "paid" and paid["cost_per_1k_tokens"] == pytest.approx(1.2)
    fake_openai.fail_next(1, status=500, path_prefix="/chat")
    down = client.post("/v1/generate", json={"model_type": "building", "params": BUILDING, "n": 1},
                       headers=_auth(READ))
    assert down.status_code == 503 and PAID in down.json()["detail"]
    assert fake_openai.api_key not in down.text


def test_concurrent_requests_share_one_model_and_are_batched(client, server):
    """One worker process loads the checkpoint once; concurrent requests share its decoding steps."""
    import asyncio

    params = client.post("/v1/examples", json={"model_type": "tree", "n": 8, "seed": 4},
                         headers=_auth(READ)).json()["examples"]
    before = client.get("/v1/status", headers=_auth(READ)).json()["generation"]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, timeout=60, headers=_auth(READ)) as ac:
            return await asyncio.gather(*(ac.post("/v1/generate", json={
                "model_type": "tree", "params": ex["params"], "n": 1, "max_new_tokens": 64}) for ex in params))

    responses = asyncio.run(run())
    assert {r.status_code for r in responses} <= {200, 409}
    after = client.get("/v1/status", headers=_auth(READ)).json()["generation"]
    assert after["model_loads"] == before["model_loads"] == 1  # loaded once, by the first request ever
    assert after["requests"] - before["requests"] == 8
    assert after["max_rows_per_step"] > 1  # several requests decoded in the same forward pass
    assert 1 <= after["torch_threads"] <= (os.cpu_count() or 1)


def test_a_checkpoint_that_cannot_be_loaded_is_503_naming_it(client):
    pinned = client.put("/v1/models/tree/pin", json={"candidate": "srl", "reason": "try the SRL stage"},
                        headers=_auth(TRAIN))
    assert pinned.status_code == 200
    try:
        params = client.post("/v1/examples", json={"model_type": "tree", "n": 1}, headers=_auth(READ)).json()
        response = client.post("/v1/generate", json={"model_type": "tree", "params": params["examples"][0]["params"]},
                               headers=_auth(READ))
        assert response.status_code == 503
        assert "checkpoint 'srl/tree/gone'" in response.json()["detail"] and "cannot be loaded" in response.json()["detail"]
        assert client.get("/health").status_code == 200  # the process lives on
    finally:
        client.delete("/v1/models/tree/pin", params={"reason": "back to the selection"}, headers=_auth(TRAIN))


# ----------------------------------------------------------------------------------------------
# Models, selection, pins


def test_models_match_model_selection(client, home):
    rows = duckdb.connect(str(home / "srl.duckdb"), read_only=True).execute(
        "SELECT skill, chosen, runner_up, margin FROM model_selection WHERE model_type = 'plant'").fetchall()
    body = client.get("/v1/models", params={"model_type": "plant"}, headers=_auth(READ)).json()
    (entry,) = body["model_types"]
    by_name = {c["name"]: c for c in entry["candidates"]}
    assert set(by_name) == {TEACHER, MUTATED} and entry["report_id"] == "plant-r1"
    selected = {(s["skill"], name, s["runner_up"], round(s["margin"], 9))
                for name, c in by_name.items() for s in c["selected_for"]}
    assert selected == {(skill, chosen, ru, round(margin, 9)) for skill, chosen, ru, margin in rows}
    teacher = by_name[TEACHER]
    assert teacher["pass_rate"] == pytest.approx(0.95) and teacher["ci_low"] < 0.95 < teacher["ci_high"]
    assert teacher["cost_per_1k_tokens"] == 0.0 and teacher["mean_latency_s"] == pytest.approx(0.1)


def test_pin_unpin_rollback_with_audit(client):
    def generate() -> httpx.Response:
        return client.post("/v1/generate", json={"model_type": "plant", "params": PLANT, "n": 1}, headers=_auth(READ))

    assert generate().status_code == 200
    pinned = client.put("/v1/models/plant/pin", json={"candidate": MUTATED, "reason": "canary of the mutated model"},
                        headers=_auth(TRAIN))
    assert pinned.status_code == 200 and pinned.json()["current"]["pin"] == MUTATED
    assert generate().status_code == 409
    rolled = client.post("/v1/models/plant/rollback", json={"reason": "canary failed"}, headers=_auth(TRAIN))
    assert rolled.status_code == 200 and rolled.json()["current"]["pin"] is None
    ok = generate()
    assert ok.status_code == 200 and ok.json()["candidate"]["name"] == TEACHER
    client.put("/v1/models/plant/pin", json={"candidate": TEACHER, "reason": "freeze for the release"},
               headers=_auth(TRAIN))
    unpinned = client.delete("/v1/models/plant/pin", params={"reason": "release done"}, headers=_auth(TRAIN))
    assert unpinned.status_code == 200 and unpinned.json()["current"]["pin"] is None
    entries = client.get("/v1/models/plant/audit", headers=_auth(READ)).json()["entries"]
    train_id = hashlib.sha256(TRAIN.encode()).hexdigest()[:8]
    mine = [(e["action"], e["candidate"], e["key_id"], e["reason"]) for e in reversed(entries) if e["key_id"] != "system"]
    assert mine == [("pin", MUTATED, train_id, "canary of the mutated model"),
                    ("rollback", TEACHER, train_id, "canary failed"),
                    ("pin", TEACHER, train_id, "freeze for the release"),
                    ("unpin", TEACHER, train_id, "release done")]
    assert entries[-1]["action"] == "adopt" and entries[-1]["key_id"] == "system"  # the first selection
    assert TRAIN not in json.dumps(entries)


def test_a_new_selection_is_served_only_when_not_worse(client, home):
    db = str(home / "srl.duckdb")
    skills = list(get_domain("personality").skills)
    write_report(db, "personality", "pers-r1", {TEACHER: {s: (30, 30) for s in skills}})
    client.get("/v1/models/personality/serving", headers=_auth(READ))
    # The mutated candidate is much faster: the utility picks it, though its pass rate is worse beyond the interval.
    write_report(db, "personality", "pers-r2", {TEACHER: {s: (30, 30) for s in skills},
                                                MUTATED: {s: (18, 30) for s in skills}},
                 latency_s={TEACHER: 20.0, MUTATED: 0.0})
    time.sleep(0.4)  # the in-memory selection's TTL
    serving = client.get("/v1/models/personality/serving", headers=_auth(READ)).json()
    assert serving["considered_report_id"] == "pers-r2"
    assert set(serving["current"]["routes"].values()) == {TEACHER}
    keep = client.get("/v1/models/personality/audit", headers=_auth(READ)).json()["entries"][0]
    assert keep["action"] == "keep" and "worse beyond the 95% interval" in keep["reason"]
    # A new report whose choice is as good is adopted; one call rolls it back, and it is not re-adopted.
    write_report(db, "personality", "pers-r3", {TEACHER: {s: (20, 30) for s in skills},
                                                MUTATED: {s: (30, 30) for s in skills}})
    time.sleep(0.4)
    serving = client.get("/v1/models/personality/serving", headers=_auth(READ)).json()
    assert set(serving["current"]["routes"].values()) == {MUTATED}
    assert set(serving["previous"]["routes"].values()) == {TEACHER}
    client.post("/v1/models/personality/rollback", json={"reason": "keep the old one"}, headers=_auth(TRAIN))
    time.sleep(0.4)
    serving = client.get("/v1/models/personality/serving", headers=_auth(READ)).json()
    assert set(serving["current"]["routes"].values()) == {TEACHER}


# ----------------------------------------------------------------------------------------------
# Lock, restarts, fallback


def test_restart_keeps_pins_teacher_fallback_and_a_locked_duckdb_is_503(client, home, tmp_path):
    client.put("/v1/models/animal/pin", json={"candidate": MUTATED, "reason": "before restart"}, headers=_auth(TRAIN))
    env = base_env(home, SRL_API_ALLOW_UNAUTHENTICATED="1", SRL_SERVING_TEST_GENERATORS=HOOK,
                   SRL_API_TEACHER_FALLBACK="1", SRL_API_DUCKDB_TIMEOUT_S="1", SRL_API_SELECTION_TTL_S="0")
    with serving_server(env, tmp_path / "uvicorn.log") as url:
        serving = httpx.get(f"{url}/v1/models/animal/serving").json()  # no key needed: unauthenticated on loopback
        assert serving["current"]["pin"] == MUTATED
        response = httpx.post(f"{url}/v1/generate", json={"model_type": "animal", "params": ANIMAL, "n": 2}, timeout=30)
        # A writer holding DuckDB's lock (a running pipeline): a read gives up in bounded time with a retry hint,
        # and what routing needs is still served from memory.
        holder = duckdb.connect(str(home / "srl.duckdb"))
        try:
            t0 = time.monotonic()
            locked = httpx.get(f"{url}/v1/models", params={"model_type": "facial"}, timeout=30)  # never read yet
            assert locked.status_code == 503 and time.monotonic() - t0 < 5
            assert "DuckDB lock" in locked.json()["detail"] and locked.headers["Retry-After"] == "2"
            again = httpx.post(f"{url}/v1/generate", json={"model_type": "animal", "params": ANIMAL, "n": 1},
                               timeout=30)
            assert again.status_code == 200 and again.json()["fallback"] == "teacher"
        finally:
            holder.close()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] == "teacher" and body["verdict"]["passed"] is True and body["samples_tried"] == 2
    assert body["candidate"]["name"] == MUTATED and body["candidate_best_verdict"]["passed"] is False
    assert body["spec"] == get_domain("animal").plan(ANIMAL, RulesIntegration().load("animal")).spec


# ----------------------------------------------------------------------------------------------
# Previews


def _teacher(model_type: str, params: dict) -> dict:
    return get_domain(model_type).plan(params, RulesIntegration().load(model_type)).spec


def test_render_a_spec_to_png_and_mark_failures(client):
    spec = _teacher("animal", ANIMAL)
    ok = client.post("/v1/render", json={"model_type": "animal", "spec": spec, "params": ANIMAL}, headers=_auth(READ))
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png" and ok.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert ok.headers["X-Verified"] == "true" and ok.headers["X-Readable"] == "true" and ok.headers["X-Marked"] == ""
    import random as _random

    domain, rules = get_domain("animal"), RulesIntegration().load("animal")
    skill = domain.task_skills(ANIMAL, rules)[0]
    broken = domain.mutate(skill, ANIMAL, spec, rules, _random.Random(0))
    bad = client.post("/v1/render", json={"model_type": "animal", "spec": broken, "params": ANIMAL}, headers=_auth(READ))
    assert bad.status_code == 200 and bad.headers["X-Verified"] == "false"
    assert skill in bad.headers["X-Marked"].split(",") and bad.content[:4] == b"\x89PNG"
    wav_of_animal = client.post("/v1/render", json={"model_type": "animal", "spec": spec, "format": "wav"},
                                headers=_auth(READ))
    assert wav_of_animal.status_code == 422 and "no audio rendering" in wav_of_animal.json()["detail"]


def test_render_sound_to_wav(client):
    params = client.post("/v1/examples", json={"model_type": "sound", "n": 1, "seed": 2},
                         headers=_auth(READ)).json()["examples"][0]["params"]
    response = client.post("/v1/render", json={"model_type": "sound", "spec": _teacher("sound", params), "format": "wav"},
                           headers=_auth(READ))
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"


def test_generate_with_a_preview(client):
    import base64

    body = client.post("/v1/generate", json={"model_type": "plant", "params": PLANT, "preview": True},
                       headers=_auth(READ)).json()
    assert base64.b64decode(body["preview_png_base64"])[:4] == b"\x89PNG"


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                kids.append(int(stat.parent.name))
        except OSError:
            continue
    return kids


def test_a_dead_generation_worker_is_replaced_and_the_server_lives_on(client, server_info):
    params = client.post("/v1/examples", json={"model_type": "tree", "n": 2, "seed": 5},
                         headers=_auth(READ)).json()["examples"]
    body = {"model_type": "tree", "params": params[0]["params"], "n": 1, "max_new_tokens": 8}
    assert client.post("/v1/generate", json=body, headers=_auth(READ)).status_code in (200, 409)
    before = client.get("/v1/status", headers=_auth(READ)).json()["generation"]
    (worker,) = _children(server_info["pid"])  # one checkpoint, one worker process
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker in _children(server_info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by the server once it sees the socket close
    response = client.post("/v1/generate", json={**body, "params": params[1]["params"]}, headers=_auth(READ))
    assert response.status_code in (200, 409), response.text  # a new worker loaded the checkpoint
    after = client.get("/v1/status", headers=_auth(READ)).json()["generation"]
    assert after["model_loads"] == before["model_loads"] + 1
    assert worker not in _children(server_info["pid"]) and len(_children(server_info["pid"])) == 1
