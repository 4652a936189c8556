"""Amazon Bedrock on loopback: moto's server for the control plane and S3, plus what moto lacks.

moto 5.2.5 implements create / get / list / stop model customization jobs and S3, but its jobs stay
``InProgress``, ``get`` works by job name only, it has no provisioned throughput, no custom model
deployment and no ``bedrock-runtime``. So one small HTTP front (the ``endpoint_url`` the bedrock and
bedrock-runtime clients get) serves:

- ``POST|GET|DELETE /provisioned-model-throughput[/{id}]`` and
  ``/model-customization/custom-model-deployments[/{id}]`` (status ``Creating`` on create, then
  ``InService`` / ``Active`` on the next get);
- ``POST /model-customization-jobs`` for a base model in ``retired``: Bedrock's end-of-life 404;
- ``POST /model/{id}/converse`` answered by ``responder(prompt) -> text`` with token usage;
- ``GET /model-customization-jobs/{id}``: moves the job one step along its schedule in moto's own
  backend (``InProgress`` → ``Completed`` by default; ``script_next_job`` for failures and unknown
  states), accepts an ARN as well as a name, then forwards to moto;
- everything else is forwarded to moto unchanged. S3 clients talk to moto directly (``s3_url``).

    with FakeBedrock() as fake:
        bedrock = fake.client("bedrock"); runtime = fake.client("bedrock-runtime"); s3 = fake.client("s3")
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
ACCESS_KEY, SECRET_KEY = "AKIAFAKEFAKEFAKEFAKE", "fake-secret-key-that-must-never-be-logged"
DEFAULT_SCHEDULE = ("InProgress", "InProgress", "Completed")


@dataclass
class FakeBedrock:
    region: str = REGION
    responder: Callable[[str], str] = field(default=lambda prompt: f"echo: {prompt}")
    schedule: tuple[str, ...] = DEFAULT_SCHEDULE
    deployments: dict[str, dict] = field(default_factory=dict)  # arn -> record (PT and on-demand)
    converse_calls: list[dict] = field(default_factory=list)
    retired: set[str] = field(default_factory=set)  # base model ids this "region" has retired

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._next_schedule: list[tuple[list[str], str | None]] = []
        self._job_scripts: dict[str, dict] = {}  # job name -> {"states", "step", "failure"}
        self._moto = None
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeBedrock":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        # moto's backends are process-global: start every fake from an empty account.
        urllib.request.urlopen(urllib.request.Request(self.s3_url + "/moto-api/reset", method="POST"))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._moto:
            self._moto.stop()

    def __enter__(self) -> "FakeBedrock":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def s3_url(self) -> str:
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    def client(self, service: str):
        """A real boto3 client with static fake keys, pointed at the front (or moto for S3)."""
        import boto3

        return boto3.client(service, region_name=self.region, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY,
                            endpoint_url=self.s3_url if service == "s3" else self.endpoint_url)

    # -- scripting ----------------------------------------------------------------------------
    def script_next_job(self, states: list[str], failure: str | None = None) -> None:
        """The next created job walks ``states`` (one per get); ``failure`` is its failureMessage."""
        self._next_schedule.append((list(states), failure))

    def _backend(self):
        from moto.bedrock.models import bedrock_backends

        return bedrock_backends[ACCOUNT][self.region]

    def jobs(self) -> dict:
        return dict(self._backend().model_customization_jobs)

    def _advance(self, job_name: str) -> None:
        job = self._backend().model_customization_jobs.get(job_name)
        if job is None:
            return
        script = self._job_scripts.setdefault(job_name, self._new_script())
        if job.status in ("Stopping", "Stopped"):
            return  # a stop call wins over the schedule
        job.status = script["states"][min(script["step"], len(script["states"]) - 1)]
        # moto reports "Failure Message" on every job; only a failed one has a message on Bedrock.
        job.failure_message = script["failure"] if job.status == "Failed" else None
        script["step"] += 1

    def _new_script(self) -> dict:
        states, failure = self._next_schedule.pop(0) if self._next_schedule else (list(self.schedule), None)
        return {"states": states, "step": 0, "failure": failure or "internal error"}

    # -- routes moto lacks -------------------------------------------------------------------
    def _custom_model_completed(self, model_arn: str) -> bool:
        for job in self._backend().model_customization_jobs.values():
            if model_arn in (job.output_model_arn, job.output_model_name) or \
                    model_arn.endswith(f"custom-model/{job.custom_model_name}"):
                return job.status == "Completed"
        return False

    def handle_local(self, method: str, path: str, body: dict) -> tuple[int, dict] | None:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        arn_prefix = f"arn:aws:bedrock:{self.region}:{ACCOUNT}"
        kinds = {("provisioned-model-throughput",): ("provisioned-model", "provisionedModelName",
                                                     "provisionedModelArn", "InService"),
                 ("model-customization", "custom-model-deployments"): ("custom-model-deployment",
                                                                       "modelDeploymentName",
                                                                       "customModelDeploymentArn", "Active")}
        for prefix, (arn_kind, name_key, arn_key, ready) in kinds.items():
            if tuple(parts[: len(prefix)]) != prefix:
                continue
            rest = parts[len(prefix):]
            with self._lock:
                if method == "POST" and not rest:
                    model = body.get("modelId") or body.get("modelArn")
                    if not self._custom_model_completed(model):
                        return 400, {"message": f"model {model} is not a completed custom model"}
                    name = body[name_key]
                    arn = f"{arn_prefix}:{arn_kind}/{name}"
                    if arn in self.deployments:
                        return 409, {"message": f"{name} already exists"}
                    self.deployments[arn] = {name_key: name, arn_key: arn, "modelArn": model,
                                             "status": "Creating", "_ready": ready, "_name": name,
                                             "modelUnits": body.get("modelUnits", 0)}
                    return (201 if arn_kind == "provisioned-model" else 202), {arn_key: arn}
                if len(rest) == 1:
                    key = rest[0]
                    found = next((a for a, d in self.deployments.items()
                                  if key in (a, d["_name"]) and a.split(":")[-1].startswith(arn_kind)), None)
                    if found is None:
                        return 404, {"message": f"{key} not found"}
                    record = self.deployments[found]
                    if method == "DELETE":
                        del self.deployments[found]
                        return 200, {}
                    out = {k: v for k, v in record.items() if not k.startswith("_")}
                    out.update(creationTime="2026-12-01T00:00:00Z", lastModifiedTime="2026-12-01T00:00:00Z",
                               createdAt="2026-12-01T00:00:00Z", foundationModelArn=f"{arn_prefix}::foundation-model/x")
                    record["status"] = record["_ready"]  # ready from the next get on
                    return 200, out
            return 404, {"message": f"no route {method} {path}"}
        if parts == ["model-customization-jobs"] and method == "POST" \
                and body.get("baseModelIdentifier") in self.retired:
            # What Bedrock answered for Claude 3 Haiku from 2026-09-10 in most regions.
            return 404, {"message": f"The model {body['baseModelIdentifier']} has reached the end of its life."}
        if len(parts) == 3 and parts[0] == "model" and parts[2] == "converse" and method == "POST":
            model_id = parts[1]
            record = self.deployments.get(model_id)
            if record is None or record["status"] != record["_ready"]:
                return 400, {"message": f"model {model_id} is not deployed and ready"}
            prompt = "".join(c.get("text", "") for m in body.get("messages", []) for c in m.get("content", []))
            answer = self.responder(prompt)
            self.converse_calls.append({"modelId": model_id, "body": body})
            usage = {"inputTokens": max(1, len(prompt) // 4), "outputTokens": max(1, len(answer) // 4)}
            usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
            return 200, {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                         "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 5}}
        if len(parts) == 2 and parts[0] == "model-customization-jobs" and method == "GET":
            with self._lock:
                self._advance(parts[1].rsplit("/", 1)[-1])  # an ARN ends in /<job name>
        return None


def _handler(fake: FakeBedrock):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            local = fake.handle_local(method, url.path, body)
            if local is not None:
                status, payload = local
                data = json.dumps(payload).encode()
                headers = {"Content-Type": "application/json"}
                if status >= 400:
                    headers["x-amzn-ErrorType"] = {404: "ResourceNotFoundException", 409: "ConflictException"
                                                   }.get(status, "ValidationException")
            else:
                status, headers, data = self._forward(method, url, raw)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _forward(self, method: str, url: urllib.parse.SplitResult, raw: bytes):
            path = url.path
            parts = path.split("/")  # the client percent-encodes the "/" inside an ARN
            if len(parts) >= 3 and parts[1] == "model-customization-jobs":
                # moto finds jobs by name only; Bedrock takes the name or the ARN.
                parts[2] = urllib.parse.quote(urllib.parse.unquote(parts[2]).rsplit("/", 1)[-1], safe="")
                path = "/".join(parts)
            target = fake.s3_url + path + (f"?{url.query}" if url.query else "")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            request = urllib.request.Request(target, data=raw or None, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status, _keep(response.headers), response.read()
            except urllib.error.HTTPError as error:
                return error.code, _keep(error.headers), error.read()

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PUT(self) -> None:
            self._serve("PUT")

    return Handler


def _keep(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")}
