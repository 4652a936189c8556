"""Training jobs through the serving API, against a real dagster-webserver and dagster-daemon on loopback.

The API runs as a real uvicorn process (``serving_api``); the Dagster-down case runs the app in-process
(starlette's TestClient) with DAGSTER_WEBSERVER_URL at a closed port, since the shared webserver stays up.
"""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest

from helpers.dagster_server import READ_KEY, TINY_PARTITION, TRAIN_KEY, free_port, wait_for_job
from srl_assets.definitions import all_assets
from srl_assets.serving.auth import key_id

READ = {"Authorization": f"Bearer {READ_KEY}"}
TRAIN = {"Authorization": f"Bearer {TRAIN_KEY}"}

_RUNS_BY_PARTITION = """query Runs($partition: String!) {
  runsOrError(filter: {pipelineName: "srl_pipeline", tags: [{key: "dagster/partition", value: $partition}]}) {
    ... on Runs { results { runId status tags { key value } } } } }"""


def test_a_job_launched_through_the_api_runs_to_success(dagster_server, serving_api, tiny_training_job):
    launch, final = tiny_training_job.launch, tiny_training_job.final
    print(f"tiny srl_pipeline run through the API: {tiny_training_job.wall_s:.1f}s")
    assert launch["model_type"] == TINY_PARTITION and launch["trigger"] == "api"
    assert launch["status"] in {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}
    assert launch["dagster_url"] == f"{dagster_server.url}/runs/{launch['id']}"
    # Every asset of the definitions ran as one step, and the API says so.
    assert final["status"] == "SUCCESS" and final["ended_at"] and final["started_at"]
    assert final["steps_total"] == len(all_assets) == final["steps_done"]
    assert set(final["steps"]) == {a.key.path[-1] for a in all_assets}
    assert set(final["steps"].values()) == {"SUCCESS"}

    # Dagster's own run list has it under its partition, with who launched it by key id, never the key.
    runs = dagster_server.graphql(_RUNS_BY_PARTITION, {"partition": TINY_PARTITION})["runsOrError"]["results"]
    run = next(r for r in runs if r["runId"] == launch["id"])
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS" and tags["dagster/partition"] == TINY_PARTITION
    assert tags["srl/requested_by"] == key_id(TRAIN_KEY) and TRAIN_KEY not in str(tags)
    assert not any(r["runId"] == launch["id"] for r in
                   dagster_server.graphql(_RUNS_BY_PARTITION, {"partition": "sound"})["runsOrError"]["results"])

    # The API's list filters the same way; the link opens the run in the Dagster UI.
    listed = httpx.get(f"{serving_api.url}/v1/training-jobs", headers=READ,
                       params={"model_type": TINY_PARTITION, "status": "SUCCESS"}).json()
    assert launch["id"] in [j["id"] for j in listed] and all(j["model_type"] == TINY_PARTITION for j in listed)
    assert launch["id"] not in [j["id"] for j in httpx.get(f"{serving_api.url}/v1/training-jobs", headers=READ,
                                                           params={"status": "FAILURE"}).json()]
    assert httpx.get(final["dagster_url"]).status_code == 200


def test_a_running_job_is_cancelled(dagster_server, serving_api, tiny_training_job):
    # cpu_long runs for hours on this machine: only a cancel ends it. (After the tiny job, so the two
    # never wait on each other's pool slots.)
    response = httpx.post(f"{serving_api.url}/v1/training-jobs", headers=TRAIN, timeout=30,
                          json={"model_type": "sound", "preset": "cpu_long"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["preset"] == "cpu_long" and job["model_type"] == "sound"
    running = wait_for_job(serving_api.url, job["id"], {"STARTED", "SUCCESS", "FAILURE", "CANCELED"}, timeout_s=60)
    assert running["status"] == "STARTED", running

    cancel = httpx.post(f"{serving_api.url}/v1/training-jobs/{job['id']}/cancel", headers=TRAIN, timeout=30)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] in {"CANCELING", "CANCELED"}
    final = wait_for_job(serving_api.url, job["id"], {"SUCCESS", "FAILURE", "CANCELED"}, timeout_s=60)
    assert final["status"] == "CANCELED", final
    runs = dagster_server.graphql(_RUNS_BY_PARTITION, {"partition": "sound"})["runsOrError"]["results"]
    assert next(r for r in runs if r["runId"] == job["id"])["status"] == "CANCELED"

    again = httpx.post(f"{serving_api.url}/v1/training-jobs/{job['id']}/cancel", headers=TRAIN)
    assert again.status_code == 409 and "already finished (CANCELED)" in again.json()["detail"]


@pytest.mark.parametrize("method, path, headers, body, code, message", [
    # case: no key at all
    ("POST", "", {}, {"model_type": "tree", "preset": "demo"}, 401, "API key"),
    # case: a key that is not configured
    ("GET", "", {"Authorization": "Bearer not-a-key"}, None, 401, "API key"),
    # case: a read key may look, not launch or cancel
    ("POST", "", READ, {"model_type": "tree", "preset": "demo"}, 403, "'train' scope"),
    ("POST", "/0b6c7a52-0000-0000-0000-000000000000/cancel", READ, None, 403, "'train' scope"),
    # case: an unknown model type is named, with the known ones
    ("POST", "", TRAIN, {"model_type": "dragon", "preset": "demo"}, 404, "unknown model type 'dragon'; known: "),
    ("GET", "?model_type=dragon", READ, None, 404, "unknown model type 'dragon'"),
    # case: an unknown preset is named, with the files there are
    ("POST", "", TRAIN, {"model_type": "tree", "preset": "nosuch"}, 422, "unknown preset 'nosuch'; known: cpu_long"),
    ("POST", "", TRAIN, {"model_type": "tree", "preset": "../dagster"}, 422, "unknown preset '../dagster'"),
    # case: exactly one of preset and run_config
    ("POST", "", TRAIN, {"model_type": "tree", "preset": "demo", "run_config": {}}, 422, "give exactly one"),
    ("POST", "", TRAIN, {"model_type": "tree"}, 422, "give exactly one"),
    # case: a run config Dagster rejects: the misspelt field is named (Dagster validates, nothing launches)
    ("POST", "", TRAIN, {"model_type": "tree", "run_config": {"ops": {"base_model": {"config": {"sft_stepz": 3}}}}},
     422, "sft_stepz"),
    # case: an unknown body field
    ("POST", "", TRAIN, {"model_type": "tree", "preset": "demo", "priority": 1}, 422, "priority"),
    # case: an unknown status filter
    ("GET", "?status=DONE", READ, None, 422, "unknown run status 'DONE'"),
    # case: an unknown job id
    ("GET", "/0b6c7a52-0000-0000-0000-000000000000", READ, None, 404,
     "no training job with id '0b6c7a52-0000-0000-0000-000000000000'"),
    ("POST", "/0b6c7a52-0000-0000-0000-000000000000/cancel", TRAIN, None, 404, "no training job"),
])
def test_bad_requests(serving_api, dagster_server, method, path, headers, body, code, message):
    response = httpx.request(method, f"{serving_api.url}/v1/training-jobs{path}", headers=headers, json=body,
                             timeout=30)
    assert response.status_code == code, response.text
    assert message in response.json()["detail"]


_ALL_RUNS = """{ runsOrError { ... on Runs { results { runId } } } }"""


def test_a_rejected_launch_creates_no_run(dagster_server, serving_api):
    before = len(dagster_server.graphql(_ALL_RUNS)["runsOrError"]["results"])
    for headers, body in [(READ, {"model_type": "tree", "preset": "demo"}),
                          (TRAIN, {"model_type": "tree", "preset": "nosuch"}),
                          (TRAIN, {"model_type": "tree", "run_config": {"ops": {"nope": {}}}})]:
        assert httpx.post(f"{serving_api.url}/v1/training-jobs", headers=headers, json=body).status_code in (403, 422)
    assert len(dagster_server.graphql(_ALL_RUNS)["runsOrError"]["results"]) == before


def test_dagster_down_is_503():
    # In-process (the shared webserver stays up): the app with DAGSTER_WEBSERVER_URL at a port nobody listens on.
    from fastapi.testclient import TestClient

    from srl_assets.serving.app import create_app
    from srl_assets.serving.settings import ServingSettings, parse_api_keys

    down = f"http://127.0.0.1:{free_port()}"
    settings = dataclasses.replace(ServingSettings(), dagster_webserver_url=down,
                                   api_keys=parse_api_keys(f"{TRAIN_KEY}:train"))
    client = TestClient(create_app(settings))
    for method, path, body in [("GET", "", None), ("GET", "/0b6c7a52-0000-0000-0000-000000000000", None),
                               ("POST", "", {"model_type": "tree", "run_config": {}}),
                               ("POST", "/0b6c7a52-0000-0000-0000-000000000000/cancel", None)]:
        start = time.monotonic()
        response = client.request(method, f"/v1/training-jobs{path}", headers=TRAIN, json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert f"Dagster is unavailable: the Dagster webserver at {down} is not reachable" in response.json()["detail"]
        assert response.headers["retry-after"] == "5" and time.monotonic() - start < 5
