"""A loopback OpenAI-compatible HTTP server for tests: the real ``openai`` SDK talks to it via ``base_url``.

Routes (all under ``/v1``):
- ``POST /files`` (multipart), ``GET /files/{id}``, ``GET /files/{id}/content``
- ``POST /fine_tuning/jobs``, ``GET /fine_tuning/jobs`` (``metadata[k]=v`` filter, ``after``, ``limit``),
  ``GET /fine_tuning/jobs/{id}`` (each retrieve advances the job one step along its script),
  ``POST /fine_tuning/jobs/{id}/cancel``
- ``POST /chat/completions``: the text comes from a pluggable ``responder(request_json) -> str``,
  so the same fake serves as a generic OpenAI-compatible LLM (e.g. a teacher) in other tests.
- ``GET /models``

Failure injection: ``fake.fail_next(n, status=429)`` answers the next n requests (optionally only
those whose path starts with ``path_prefix``) with that status and an OpenAI-style error body.
Every request is recorded in ``fake.requests`` (method, path, json body) for assertions; the
Authorization header is checked against ``api_key`` and never recorded.

    with FakeOpenAI(responder=lambda req: "hi") as fake:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

Responder = Callable[[dict], str]

DEFAULT_SCRIPT = ("validating_files", "queued", "running", "succeeded")


def echo_last_user(request: dict) -> str:
    """Default responder: the last user message back."""
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else json.dumps(content)


def _tokens(text: str) -> int:
    # Not a tokenizer: deterministic and roughly OpenAI-sized (≈ 4 characters per token).
    return max(1, (len(text) + 3) // 4)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class _Failure:
    remaining: int
    status: int
    path_prefix: str
    method: str = ""      # "" = any method


@dataclass
class FakeOpenAI:
    """Start with ``with FakeOpenAI() as fake`` (or ``start()`` / ``stop()``)."""

    responder: Responder = echo_last_user
    api_key: str = "sk-test-FAKE0000secret"
    job_script: tuple[str, ...] = DEFAULT_SCRIPT
    job_error: dict | None = None              # error{code,message,param} of a job that ends "failed"
    tuned_model_prefix: str = "ft"
    latency_s: float = 0.0                      # added to every chat completion
    files: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._scripts: dict[str, list[str]] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- test controls --------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 429, path_prefix: str = "", method: str = "") -> None:
        """Answer the next ``n`` matching requests with ``status``. ``path_prefix`` is relative to
        /v1 (e.g. "/chat/completions"; "" matches every route); ``method`` "" matches any."""
        with self._lock:
            self._failures.append(_Failure(n, status, "/v1" + path_prefix, method.upper()))

    def set_script(self, job_id: str, states: list[str]) -> None:
        """Replace the remaining states of one job (e.g. to inject an unknown state)."""
        with self._lock:
            self._scripts[job_id] = list(states)

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith("/v1" + path_prefix)]

    # -- internals ------------------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def _take_failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for f in self._failures:
                if f.remaining > 0 and path.startswith(f.path_prefix) and f.method in ("", method):
                    f.remaining -= 1
                    return f.status
        return None

    def _advance(self, job: dict) -> None:
        script = self._scripts.get(job["id"])
        if not script:
            return
        job["status"] = script.pop(0)
        if job["status"] == "succeeded":
            job["fine_tuned_model"] = (f"{self.tuned_model_prefix}:{job['model']}:fake-org:"
                                       f"{job.get('user_provided_suffix') or 'x'}:{job['id'][-6:]}")
            job["trained_tokens"] = job.pop("_tokens", 1000)
            job["finished_at"] = int(time.time())
        elif job["status"] == "failed":
            job["error"] = self.job_error or {"code": "invalid_training_file",
                                              "message": "Training file has invalid examples", "param": "training_file"}
            job["finished_at"] = int(time.time())

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                                     "owned_by": "fake"}]}
        if method == "POST" and path == "/v1/files":
            return self._create_file(body)
        if path.startswith("/v1/files/"):
            rest = path[len("/v1/files/"):]
            file_id, _, tail = rest.partition("/")
            if file_id not in self.files:
                return 404, _error(f"No such File object: {file_id}", "invalid_request_error")
            if tail == "content":
                return 200, self.files[file_id]["_content"]
            return 200, _public(self.files[file_id])
        if path == "/v1/fine_tuning/jobs":
            return self._create_job(body) if method == "POST" else self._list_jobs(query)
        if path.startswith("/v1/fine_tuning/jobs/"):
            rest = path[len("/v1/fine_tuning/jobs/"):]
            job_id, _, tail = rest.partition("/")
            with self._lock:
                job = self.jobs.get(job_id)
                if job is None:
                    return 404, _error(f"No such job: {job_id}", "invalid_request_error")
                if method == "POST" and tail == "cancel":
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        return 400, _error(f"Job {job_id} is already {job['status']}", "invalid_request_error")
                    job["status"] = "cancelled"
                    self._scripts[job_id] = []
                elif method == "GET" and not tail:
                    self._advance(job)
                else:
                    return 404, _error(f"unsupported: {method} {path}", "invalid_request_error")
                return 200, _public(job)
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(body)
        return 404, _error(f"unsupported: {method} {path}", "invalid_request_error")

    def _create_file(self, form: dict) -> tuple[int, Any]:
        if not isinstance(form, dict) or "file" not in form:
            return 400, _error("multipart field 'file' is required", "invalid_request_error")
        content, filename = form["file"]
        with self._lock:
            file_id = self._next_id("file")
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                                   "created_at": int(time.time()), "filename": filename,
                                   "purpose": form.get("purpose", ""), "status": "processed", "_content": content}
        return 200, _public(self.files[file_id])

    def _create_job(self, body: dict) -> tuple[int, Any]:
        if body.get("training_file") not in self.files:
            return 400, _error(f"invalid training_file: {body.get('training_file')}", "invalid_request_error")
        content = self.files[body["training_file"]]["_content"]
        with self._lock:
            job_id = self._next_id("ftjob")
            method = body.get("method") or {"type": "supervised", "supervised": {}}
            job = {"id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()),
                   "model": body["model"], "training_file": body["training_file"],
                   "validation_file": body.get("validation_file"), "status": self.job_script[0],
                   "fine_tuned_model": None, "finished_at": None, "error": None, "trained_tokens": None,
                   "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
                   "organization_id": "org-fake", "result_files": [], "seed": body.get("seed") or 0,
                   "metadata": body.get("metadata"), "method": method,
                   "user_provided_suffix": body.get("suffix"), "_tokens": _tokens(content.decode("utf-8", "replace"))}
            self.jobs[job_id] = job
            self._scripts[job_id] = list(self.job_script[1:])
        return 200, _public(job)

    def _list_jobs(self, query: dict[str, str]) -> tuple[int, Any]:
        wanted = {k[len("metadata["):-1]: v for k, v in query.items() if k.startswith("metadata[")}
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j["id"], reverse=True)  # newest first
        jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
        if "after" in query:
            ids = [j["id"] for j in jobs]
            jobs = jobs[ids.index(query["after"]) + 1:] if query["after"] in ids else []
        limit = int(query.get("limit", 20))
        return 200, {"object": "list", "data": [_public(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}

    def _chat(self, body: dict) -> tuple[int, Any]:
        if self.latency_s:
            time.sleep(self.latency_s)
        text = self.responder(body)
        prompt_text = "".join(m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
                              for m in body.get("messages", []))
        p, c = _tokens(prompt_text), _tokens(text)
        return 200, {"id": self._next_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model", ""),
                     "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                  "message": {"role": "assistant", "content": text, "refusal": None}}],
                     "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _error(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _parse_multipart(content_type: str, raw: bytes) -> dict:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + raw)
    form: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        form[name] = (payload, filename) if filename is not None else payload.decode()
    return form


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet test output
        pass

    def _dispatch(self, method: str) -> None:
        fake = self.owner
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            body: Any = _parse_multipart(ctype, raw)
        elif raw:
            body = json.loads(raw)
        else:
            body = None
        fake.requests.append(Recorded(method, url.path, query, body if not ctype.startswith("multipart") else
                                      {k: v for k, v in body.items() if k != "file"}))
        if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._send(401, _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))
        status = fake._take_failure(method, url.path)
        if status is not None:
            kind = {429: "rate_limit_error", 403: "permission_error"}.get(status, "server_error")
            return self._send(status, _error(f"injected {status}", kind))
        try:
            code, payload = fake.handle(method, url.path, query, body)
        except Exception as exc:  # a bug in a responder shows as a 500 the SDK raises, not a hang
            code, payload = 500, _error(f"fake error: {exc!r}", "server_error")
        self._send(code, payload)

    def _send(self, code: int, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
