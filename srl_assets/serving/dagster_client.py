"""Training jobs through the running Dagster webserver's GraphQL API (``DAGSTER_WEBSERVER_URL``).

Launching, status and termination use the official ``dagster_graphql.DagsterGraphQLClient``. It has no
call that lists runs or reads a run's steps, so those two are raw GraphQL queries sent through the same
client (its ``_execute`` wraps transport errors the same way, so one error mapping covers both).

Runs go through the webserver rather than the Dagster instance so the service needs no access to the
instance's storage, and every job shows in the Dagster UI like any other run (queued by the run
coordinator, limited per partition like a run started there).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlsplit

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql.transport.exceptions import TransportConnectionFailed, TransportProtocolError, TransportServerError

PARTITION_TAG = "dagster/partition"

# The run statuses Dagster reports (dagster.DagsterRunStatus), in the order a run goes through them.
RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "MANAGED", "STARTED", "CANCELING", "SUCCESS", "FAILURE",
                "CANCELED")
FINISHED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

_RUN_FIELDS = """
fragment TrainingRunFields on Run {
  runId
  jobName
  status
  creationTime
  startTime
  endTime
  tags { key value }
  stepStats { stepKey status }
}
"""

_RUNS_QUERY = _RUN_FIELDS + """
query TrainingRuns($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs { results { ...TrainingRunFields } }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""

_RUN_QUERY = _RUN_FIELDS + """
query TrainingRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { ...TrainingRunFields executionPlan { steps { key } } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


# What the transport raises when nothing (or no Dagster) answers at the URL.
_UNREACHABLE = (requests.RequestException, TransportConnectionFailed, TransportServerError, TransportProtocolError)


class DagsterUnavailable(RuntimeError):
    """The webserver cannot be reached, or its code location does not offer the job."""


class DagsterRunNotFound(LookupError):
    def __init__(self, run_id: str):
        super().__init__(f"no Dagster run with id {run_id!r}")
        self.run_id = run_id


class DagsterRejected(ValueError):
    """Dagster refused the request (invalid run config, a run that cannot be terminated)."""

    def __init__(self, kind: str, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.errors = errors or []


@dataclass(frozen=True)
class RunInfo:
    """What the API reports of one run."""

    run_id: str
    job_name: str
    status: str
    tags: dict[str, str]
    created_at: float
    started_at: float | None
    ended_at: float | None
    steps_done: int
    steps_total: int | None = None
    steps: dict[str, str] = field(default_factory=dict)  # step key -> Dagster step status

    @property
    def partition(self) -> str | None:
        return self.tags.get(PARTITION_TAG)

    @classmethod
    def from_graphql(cls, node: dict[str, Any]) -> "RunInfo":
        steps = {s["stepKey"]: s["status"] for s in node.get("stepStats") or []}
        plan = node.get("executionPlan")
        return cls(
            run_id=node["runId"], job_name=node["jobName"], status=node["status"],
            tags={t["key"]: t["value"] for t in node.get("tags") or []},
            created_at=node["creationTime"], started_at=node.get("startTime"), ended_at=node.get("endTime"),
            steps_done=sum(status == "SUCCESS" for status in steps.values()),
            steps_total=len(plan["steps"]) if plan else None, steps=steps)


class DagsterClient:
    """A thin, typed client for the few calls the training-jobs routes make."""

    def __init__(self, webserver_url: str, timeout_s: int = 10):
        parts = urlsplit(webserver_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"DAGSTER_WEBSERVER_URL must be an http(s) URL, got {webserver_url!r}")
        self.webserver_url = webserver_url.rstrip("/")
        self._host, self._port = parts.hostname, parts.port
        self._https, self._prefix = parts.scheme == "https", parts.path.rstrip("/")
        self._timeout_s = timeout_s

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.webserver_url}/runs/{run_id}"

    def _client(self) -> DagsterGraphQLClient:
        # A fresh client per call: gql's synchronous Client refuses a second request while one is in flight
        # (TransportAlreadyConnected), and FastAPI runs sync routes on a thread pool.
        return DagsterGraphQLClient(self._host, port_number=self._port, use_https=self._https,
                                    timeout=self._timeout_s, path_prefix=self._prefix)

    def launch(self, job_name: str, partition: str, run_config: dict[str, Any],
               tags: dict[str, str] | None = None) -> str:
        """Submit ``job_name`` for one partition; the run id. Dagster validates the run config."""
        tags = {**(tags or {}), PARTITION_TAG: partition}
        with self._errors():
            return self._client().submit_job_execution(job_name, run_config=run_config, tags=tags)

    def status(self, run_id: str) -> str:
        with self._errors(run_id):
            return self._client().get_run_status(run_id).value

    def run(self, run_id: str) -> RunInfo:
        with self._errors(run_id):
            data = self._client()._execute(_RUN_QUERY, {"runId": run_id})["runOrError"]
        if data["__typename"] == "RunNotFoundError":
            raise DagsterRunNotFound(run_id)
        if data["__typename"] != "Run":
            raise DagsterUnavailable(f"Dagster could not read run {run_id}: {data.get('message')}")
        return RunInfo.from_graphql(data)

    def runs(self, job_name: str, partition: str | None = None, statuses: list[str] | None = None,
             limit: int = 50) -> list[RunInfo]:
        """The newest runs of ``job_name`` first, optionally of one partition and some statuses."""
        run_filter: dict[str, Any] = {"pipelineName": job_name}
        if partition:
            run_filter["tags"] = [{"key": PARTITION_TAG, "value": partition}]
        if statuses:
            run_filter["statuses"] = list(statuses)
        with self._errors():
            data = self._client()._execute(_RUNS_QUERY, {"filter": run_filter, "limit": limit})["runsOrError"]
        if data["__typename"] != "Runs":
            raise DagsterUnavailable(f"Dagster could not list runs: {data.get('message')}")
        return [RunInfo.from_graphql(node) for node in data["results"]]

    def terminate(self, run_id: str) -> None:
        with self._errors(run_id):
            self._client().terminate_run(run_id)

    @contextmanager
    def _errors(self, run_id: str | None = None) -> Iterator[None]:
        """The wrapper raises one exception type for everything: tell unreachable / not found / rejected apart."""
        try:
            yield
        except requests.RequestException as exc:
            raise DagsterUnavailable(self._down(exc)) from exc
        except DagsterGraphQLClientError as exc:
            cause = exc.__cause__
            if isinstance(cause, _UNREACHABLE):
                raise DagsterUnavailable(self._down(cause)) from exc
            kind = str(exc.args[0]) if exc.args else "DagsterGraphQLClientError"
            detail = exc.args[1] if len(exc.args) > 1 else ""
            if kind in ("RunNotFoundError", "PipelineNotFoundError") and run_id:
                raise DagsterRunNotFound(run_id) from exc
            if kind in ("RunConfigValidationInvalid", "PipelineConfigValidationInvalid"):
                errors = [e.get("message", str(e)) if isinstance(e, dict) else str(e) for e in detail or []]
                raise DagsterRejected(kind, "Dagster rejected the run config: " + "; ".join(errors), errors) from exc
            if kind == "TerminateRunFailure":
                raise DagsterRejected(kind, str(detail)) from exc
            # JobNotFoundError (the code location did not load), PythonError, anything else: not usable now.
            raise DagsterUnavailable(f"the Dagster webserver at {self.webserver_url} answered {kind}: {detail}") from exc

    def _down(self, cause: BaseException | None) -> str:
        return (f"the Dagster webserver at {self.webserver_url} is not reachable ({type(cause).__name__}); "
                "start it (`make ui`) or set DAGSTER_WEBSERVER_URL")
