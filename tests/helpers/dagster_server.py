"""A real ``dagster-webserver`` and ``dagster-daemon`` on loopback, shared by the whole test session.

tests/conftest.py registers this module as a plugin (``pytest_plugins``), so every test module gets the
same session instances: ask for the ``dagster_server`` fixture.

* A temporary DAGSTER_HOME with the repo's dagster.yaml (whichever run coordinator it names: the daemon
  dequeues a QueuedRunCoordinator's runs; with the DefaultRunCoordinator runs start at once).
* A free port on 127.0.0.1; ready when ``/server_info`` answers and the code location has loaded.
* Both processes start in their own session (``setsid``) and are stopped by killing their process
  groups, which also ends the code servers, run workers and training children they started.
* Fake secrets in their environment (``SECRET_VALUES``), so a test can check none of them shows in the
  UI, the logs or the metadata.

Two more session fixtures build on it: ``serving_api`` (the FastAPI service as a real uvicorn process,
wired to that webserver, with the keys READ_KEY and TRAIN_KEY) and ``tiny_training_job`` (one
``srl_pipeline`` run of the tiny configuration for TINY_PARTITION, launched through the API and
finished: the instance then holds every asset of that partition, for tests that look at the UI).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Recognizable fake values: a test that finds one of them in a page, a log or a table has found a leak.
SECRET_VALUES = {
    "WANDB_API_KEY": "fake-wandb-key-3f9c1e7a5b2d4c68",
    "TEACHER_API_KEY": "fake-teacher-key-8d2e6a1f0c9b",
    "OPENAI_API_KEY": "sk-fake-openai-5e1d9c3b7a2f4e80",
    "AWS_SECRET_ACCESS_KEY": "fake/aws+secret+9b8c7d6e5f4a3b2c1d0e",
    "SRL_API_KEYS": "fake-read-key-4b7e2c9d,fake-train-key-1a6f3e8b:train",
}
READ_KEY = "fake-read-key-4b7e2c9d"
TRAIN_KEY = "fake-train-key-1a6f3e8b"

READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 10.0) -> dict:
    """One raw GraphQL request to the webserver (tests use it to check what Dagster itself reports)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise AssertionError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


@dataclass(frozen=True)
class DagsterServer:
    url: str
    port: int
    home: Path
    env: dict[str, str]  # the environment both processes run with (DAGSTER_HOME, fake secrets, ...)
    webserver_log: Path
    daemon_log: Path

    def logs(self) -> str:
        return "".join(f"--- {p.name} (tail) ---\n{p.read_text(errors='replace')[-4000:]}\n"
                       for p in (self.webserver_log, self.daemon_log) if p.exists())

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables)

    def run_errors(self, run_id: str) -> str:
        """The step and run failure messages of a run (what to read when a run did not succeed)."""
        events = self.graphql(_FAILURES, {"runId": run_id})["logsForRun"].get("events", [])
        return "\n".join(f"{e.get('stepKey') or 'run'}: {(e.get('error') or {}).get('message') or e.get('message')}"
                         for e in events if e)


_FAILURES = """query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  ... on ExecutionStepFailureEvent { stepKey error { message } } ... on RunFailureEvent { message } } } } }"""


def server_env(home: Path, **extra: str) -> dict[str, str]:
    # Nothing of the developer's own configuration (SRL_TEACHER, SRL_CHECKPOINT_URI, DAGSTER_HOME, ...).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRL_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                # No wandb service process per training child: the tests check Dagster, not tracking.
                "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1", **SECRET_VALUES, **extra})
    return env


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        # start_new_session: setsid(), so the whole tree (code servers, run workers, training children)
        # is one process group that teardown can kill at once.
        return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM every process group at once, then SIGKILL what is left after ``grace_s``."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        # The group outlives its leader when a run worker or a training child ignores SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


_LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _wait_ready(server: DagsterServer, procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} while starting\n{server.logs()}")
        try:
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=2) as response:
                json.loads(response.read())
            entries = server.graphql(_LOCATIONS)["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            for entry in loaded:
                if entry["locationOrLoadError"]["__typename"] == "PythonError":
                    raise RuntimeError(f"code location {entry['name']} failed to load: "
                                       f"{entry['locationOrLoadError']['message']}")
            if entries and len(loaded) == len(entries):
                return
            last = f"code locations loading: {[e['name'] for e in entries]}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise TimeoutError(f"dagster-webserver not ready after {timeout_s:.0f}s ({last})\n{server.logs()}")


@contextmanager
def run_dagster_server(home: Path, **env_extra: str) -> Iterator[DagsterServer]:
    """Webserver + daemon on a DAGSTER_HOME holding the repo's dagster.yaml; stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = server_env(home, **env_extra)
    server = DagsterServer(url=f"http://127.0.0.1:{port}", port=port, home=home, env=env,
                           webserver_log=home / "webserver.log", daemon_log=home / "daemon.log")
    # Create the instance's SQLite storage once here: the two processes creating it at the same time race
    # ("table alembic_version already exists").
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.get_latest_materialization_event(dg.AssetKey("rules"))
        instance.all_instigator_state()
    # The UI's "Join the Dagster community" dialog, once dismissed, is remembered by this file: without it
    # the dialog covers the page a browser test looks at.
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    workspace = str(REPO_ROOT / "workspace.yaml")
    procs = [_start([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
                    env, server.webserver_log),
             _start([str(BIN / "dagster-daemon"), "run", "-w", workspace], env, server.daemon_log)]
    try:
        _wait_ready(server, procs, READY_TIMEOUT_S)
        yield server
    finally:
        _stop(procs)


@dataclass(frozen=True)
class ServingApi:
    url: str
    log: Path

    def logs(self) -> str:
        return f"--- {self.log.name} (tail) ---\n{self.log.read_text(errors='replace')[-4000:]}\n"


@contextmanager
def run_serving_api(server: DagsterServer) -> Iterator[ServingApi]:
    """The serving API as a real uvicorn process (tests/helpers/uvicorn_server.py), wired to ``server``."""
    from helpers.uvicorn_server import serving_server

    env = {**server.env, "DAGSTER_WEBSERVER_URL": server.url, "SRL_API_HOST": "127.0.0.1"}
    log = server.home / "serving_api.log"
    with serving_server(env, log) as url:
        yield ServingApi(url=url, log=log)


TINY_PARTITION = "tree"


def tiny_run_config() -> dict:
    """tests/test_pipeline_assets.py's tiny settings: the whole chain in well under a minute of CPU."""
    from test_pipeline_assets import RUN_CONFIG

    return copy.deepcopy(RUN_CONFIG)


def wait_for_job(api_url: str, job_id: str, until: set[str], timeout_s: float, poll_s: float = 0.5) -> dict:
    """Poll GET /v1/training-jobs/{id} until its status is in ``until``; the last answer."""
    import httpx

    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {READ_KEY}"}
    while True:
        job = httpx.get(f"{api_url}/v1/training-jobs/{job_id}", headers=headers, timeout=10).raise_for_status().json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"training job {job_id} still {job['status']} after {timeout_s:.0f}s "
                               f"(waiting for {sorted(until)}): {job}")
        time.sleep(poll_s)


@dataclass(frozen=True)
class TinyJob:
    launch: dict  # the API's answer to the launch (201)
    final: dict  # GET /v1/training-jobs/{id} once finished
    wall_s: float

    @property
    def id(self) -> str:
        return self.launch["id"]


@pytest.fixture(scope="session")
def serving_api(dagster_server: DagsterServer) -> Iterator[ServingApi]:
    with run_serving_api(dagster_server) as api:
        yield api


@pytest.fixture(scope="session")
def tiny_training_job(dagster_server: DagsterServer, serving_api: ServingApi) -> TinyJob:
    """One tiny ``srl_pipeline`` run for TINY_PARTITION, launched through the API and finished."""
    import httpx

    start = time.monotonic()
    response = httpx.post(f"{serving_api.url}/v1/training-jobs", timeout=30,
                          headers={"Authorization": f"Bearer {TRAIN_KEY}"},
                          json={"model_type": TINY_PARTITION, "run_config": tiny_run_config()})
    assert response.status_code == 201, response.text
    launch = response.json()
    final = wait_for_job(serving_api.url, launch["id"], {"SUCCESS", "FAILURE", "CANCELED"}, timeout_s=240)
    assert final["status"] == "SUCCESS", (f"the tiny run ended {final['status']}: {final}\n"
                                          f"{dagster_server.run_errors(launch['id'])}")
    return TinyJob(launch=launch, final=final, wall_s=time.monotonic() - start)


@pytest.fixture(scope="session")
def dagster_server(tmp_path_factory) -> Iterator[DagsterServer]:
    with run_dagster_server(tmp_path_factory.mktemp("dagster_home")) as server:
        yield server
