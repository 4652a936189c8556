"""A loopback fake of the Vertex AI routes google-genai calls in Vertex mode, plus Cloud Storage.

Tuning: ``POST {v}/projects/P/locations/L/tuningJobs`` (create), ``GET .../tuningJobs?filter=``
(list, ``labels.k="v"`` filters), ``GET {v}/{name}`` (get: the job moves one step along its
schedule on each get), ``POST {v}/{name}:cancel``. Inference: ``POST {v}/{endpoint}:generateContent``
answers from a pluggable ``responder(prompt) -> text`` with usage counts.

Cloud Storage is ``gcp-storage-emulator`` (PyPI) in memory on its own loopback port, talked to by
the official google-cloud-storage client (``client_options.api_endpoint``), so the upload is the
real client's real HTTP. A create call whose ``trainingDatasetUri`` is not an object in the
emulator fails like Vertex does (400), so a test cannot pass without uploading.

    with FakeVertex() as fake:
        client = fake.genai_client(); storage = fake.storage_client()
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

DEFAULT_SCHEDULE = ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
TOKEN = "test-token"  # the static bearer the fake's clients send; checked on every request


@dataclass
class FakeJob:
    name: str
    body: dict
    schedule: list[str]
    error: dict | None = None
    step: int = 0
    cancelled: bool = False

    @property
    def state(self) -> str:
        return "JOB_STATE_CANCELLED" if self.cancelled else self.schedule[min(self.step, len(self.schedule) - 1)]


@dataclass
class FakeVertex:
    project: str = "test-project"
    location: str = "us-central1"
    billable_tokens: int = 4321
    responder: Callable[[str], str] = field(default=lambda prompt: f"echo: {prompt}")
    schedule: tuple[str, ...] = DEFAULT_SCHEDULE
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # method, path, body
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # base model -> 403 message on create

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._next_schedule: list[tuple[list[str], dict | None]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._gcs = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeVertex":
        from gcp_storage_emulator.server import create_server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self._gcs = create_server("127.0.0.1", 0, in_memory=True)
        self._gcs.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._gcs:
            self._gcs.stop()

    def __enter__(self) -> "FakeVertex":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self._gcs._api._httpd.server_address[1]}"

    # -- clients pointed here ------------------------------------------------------------------
    def genai_client(self):
        from google import genai
        from google.genai import types
        from google.oauth2.credentials import Credentials

        return genai.Client(enterprise=True, project=self.project, location=self.location,
                            credentials=Credentials(token=TOKEN),
                            http_options=types.HttpOptions(base_url=self.base_url, api_version="v1beta1"))

    def storage_client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=self.project, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.storage_url})

    def create_bucket(self, name: str) -> None:
        self.storage_client().create_bucket(name)

    # -- scripting ----------------------------------------------------------------------------
    def script_next_job(self, states: list[str], error: dict | None = None) -> None:
        """The next created job walks ``states`` (one per get) and, if given, carries ``error``."""
        self._next_schedule.append((list(states), error))

    def created_jobs(self) -> list[FakeJob]:
        return list(self.jobs.values())

    # -- routes -------------------------------------------------------------------------------
    def _object_exists(self, gs_uri: str) -> bool:
        m = re.fullmatch(r"gs://([^/]+)/(.+)", gs_uri or "")
        if not m:
            return False
        return self.storage_client().bucket(m.group(1)).blob(m.group(2)).exists()

    def _job_json(self, job: FakeJob) -> dict:
        out = {"name": job.name, "state": job.state, "createTime": "2026-12-01T00:00:00Z",
               **{k: v for k, v in job.body.items() if k != "labels"}, "labels": job.body.get("labels", {})}
        if job.state == "JOB_STATE_SUCCEEDED":
            n = job.name.rsplit("/", 1)[1]
            prefix = f"projects/{self.project}/locations/{self.location}"
            out["tunedModel"] = {"model": f"{prefix}/models/m{n}", "endpoint": f"{prefix}/endpoints/e{n}"}
            spec = "preferenceOptimizationDataStats" if "preferenceOptimizationSpec" in job.body \
                else "supervisedTuningDataStats"
            out["tuningDataStats"] = {spec: {"totalBillableTokenCount": str(self.billable_tokens)}}
        if job.state == "JOB_STATE_FAILED":
            out["error"] = job.error or {"code": 13, "message": "internal error"}
        return out

    def handle(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/", 1)
        if len(parts) != 2 or parts[0] not in ("v1", "v1beta1"):
            return 404, {"error": {"code": 404, "message": f"no route {path}"}}
        resource = parts[1]
        parent = f"projects/{self.project}/locations/{self.location}"
        with self._lock:
            if resource == f"{parent}/tuningJobs" and method == "POST" and body.get("baseModel") in self.refused:
                return 403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                       "message": self.refused[body["baseModel"]]}}
            if resource == f"{parent}/tuningJobs" and method == "POST":
                spec = (body.get("supervisedTuningSpec") or body.get("preferenceOptimizationSpec")
                        or body.get("reinforcementTuningSpec") or {})
                if not self._object_exists(spec.get("trainingDatasetUri", "")):
                    return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                                 f"training dataset {spec.get('trainingDatasetUri')!r} not found"}}
                states, error = self._next_schedule.pop(0) if self._next_schedule else (list(self.schedule), None)
                name = f"{parent}/tuningJobs/{len(self.jobs) + 1}"
                self.jobs[name] = FakeJob(name, body, states, error)
                return 200, self._job_json(self.jobs[name])
            if resource == f"{parent}/tuningJobs" and method == "GET":
                jobs = list(self.jobs.values())
                for key, value in re.findall(r'labels\.([\w-]+)\s*=\s*"?([\w-]+)"?', query.get("filter", "")):
                    jobs = [j for j in jobs if j.body.get("labels", {}).get(key) == value]
                return 200, {"tuningJobs": [self._job_json(j) for j in jobs]} if jobs else {}
            if resource.endswith(":cancel") and method == "POST":
                job = self.jobs.get(resource[: -len(":cancel")])
                if job is None:
                    return 404, {"error": {"code": 404, "message": "job not found"}}
                job.cancelled = True
                return 200, {}
            if resource.endswith(":generateContent") and method == "POST":
                endpoint = resource[: -len(":generateContent")]
                if not any(self._job_json(j).get("tunedModel", {}).get("endpoint") == endpoint
                           for j in self.jobs.values()):
                    return 404, {"error": {"code": 404, "message": f"endpoint {endpoint} not found"}}
                prompt = "".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))
                answer = self.responder(prompt)
                return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": answer}]},
                                             "finishReason": "STOP"}],
                             "usageMetadata": {"promptTokenCount": max(1, len(prompt) // 4),
                                               "candidatesTokenCount": max(1, len(answer) // 4),
                                               "totalTokenCount": max(1, len(prompt) // 4) + max(1, len(answer) // 4)},
                             "modelVersion": endpoint}
            if resource in self.jobs and method == "GET":
                job = self.jobs[resource]
                out = self._job_json(job)
                job.step += 1  # the next get sees the next state
                return 200, out
        return 404, {"error": {"code": 404, "message": f"no route {method} {path}"}}


def _handler(fake: FakeVertex):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _serve(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            fake.requests.append((method, url.path, body))
            fake.headers_seen.append(dict(self.headers))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, payload = 401, {"error": {"code": 401, "message": "missing or wrong bearer token"}}
            else:
                status, payload = fake.handle(method, url.path, query, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
