"""No secret value leaves where it is needed: the real webserver (with fake secrets in its
environment) shows none of them for any resource, a finished run's logs and metadata hold none of
them, and a training child inherits only the variables its job needs."""

import json
import sys
from pathlib import Path

import dagster as dg

from helpers.dagster_server import SECRET_VALUES
from resources.training import AWS_CHILD_ENV, ChildProcessClient, child_env_names

_RESOURCES = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name
  allTopLevelResourceDetails { name resourceType configuredValues { key value type }
    nestedResources { name resource { name configuredValues { key value type } } } } } } } }"""

_RUN_LOGS = """query($runId: ID!) { logsForRun(runId: $runId) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message }
    ... on DisplayableEvent { label description metadataEntries { __typename label
      ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
      ... on MarkdownMetadataEntry { mdStr } ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url } } }
  } } } }"""


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRET_VALUES.items() if any(part in text for part in value.split(","))]


def test_webserver_shows_no_secret_of_any_resource(dagster_server):
    data = dagster_server.graphql(_RESOURCES)
    (repo,) = data["repositoriesOrError"]["nodes"]
    resources = {r["name"]: r for r in repo["allTopLevelResourceDetails"]}
    assert {"wandb", "teacher", "checkpoint_store", "training", "duckdb_store"} <= set(resources)
    assert _leaks(json.dumps(data)) == []
    # The wandb key is configured as what it is: the name of an environment variable.
    wandb = {v["key"]: v for v in resources["wandb"]["configuredValues"]}
    assert wandb["api_key"] == {"key": "api_key", "value": "WANDB_API_KEY", "type": "ENV_VAR"}


def test_a_runs_logs_metadata_and_storage_hold_no_secret(dagster_server, tiny_training_job):
    """The tiny srl_pipeline run (training children included) that the server ran with the fake
    secrets in its environment: its event log, metadata and everything under DAGSTER_HOME."""
    data = dagster_server.graphql(_RUN_LOGS, {"runId": tiny_training_job.id})
    events = data["logsForRun"]["events"]
    assert any(e["__typename"] == "MaterializationEvent" and e["metadataEntries"] for e in events)
    assert _leaks(json.dumps(data)) == []
    leaked = {}
    for path in Path(dagster_server.home).rglob("*"):
        if path.is_file() and path.name != "serving_api.log":  # the API's own log is the API's test
            found = _leaks(path.read_bytes().decode("utf-8", errors="replace"))
            if found:
                leaked[str(path.relative_to(dagster_server.home))] = found
    assert leaked == {}


def test_a_child_inherits_only_what_its_job_needs(tmp_path, monkeypatch):
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    dump = tmp_path / "env.json"

    def child_env(uri: str, extra: dict) -> dict:
        @dg.asset
        def show_env(context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient):
            code = ("import json, os, sys\nfrom dagster_pipes import open_dagster_pipes\n"
                    "with open_dagster_pipes() as p:\n"
                    f"    json.dump(dict(os.environ), open({str(dump)!r}, 'w'))\n"
                    "    p.report_asset_materialization()\n")
            return pipes_subprocess_client.run(command=[sys.executable, "-c", code], context=context,
                                               env=extra).get_materialize_result()

        client = ChildProcessClient(inherit=child_env_names(uri))
        assert dg.materialize([show_env], resources={"pipes_subprocess_client": client}).success
        return json.loads(dump.read_text())

    env = child_env("/tmp/checkpoints", {"WANDB_MODE": "offline"})
    assert _leaks(json.dumps(env)) == [] and "AWS_ACCESS_KEY_ID" not in env
    assert env["WANDB_MODE"] == "offline" and env["PATH"]  # what the caller passed, and the basics
    # Checkpoints in S3: the child reads and writes them itself, so it gets the AWS variables, only those.
    env = child_env("s3://bucket/prefix", {})
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRET_VALUES["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE" and set(AWS_CHILD_ENV) >= {"AWS_ACCESS_KEY_ID"}
    assert [n for n in _leaks(json.dumps(env)) if n != "AWS_SECRET_ACCESS_KEY"] == []
