import os

import dagster as dg
import pytest

from resources.duckdb_store import DuckDBStore

# Session fixtures shared across modules (one dagster-webserver + daemon, one serving API, one tiny run,
# one headless Chromium, one Vertex and one Bedrock fake).
pytest_plugins = ["helpers.dagster_server", "helpers.browser", "helpers.paid_fakes"]

# Nothing in the test suite may reach a model hub or an experiment tracker.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# `make test` runs two pytest-xdist workers with `--dist loadgroup`. Each test file is one group (as with
# `--dist loadfile`: a module's fixtures are set up once), except that every test using the Dagster
# webserver fixtures joins one group, so the webserver, its daemon and the tiny run start once per session.
SHARED_SERVER_GROUP = "dagster-server"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = "dagster_server" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group(SHARED_SERVER_GROUP if shared else item.nodeid.split("::")[0]))


@pytest.fixture
def store(tmp_path):
    """An empty DuckDB store in the test's own folder."""
    return DuckDBStore(database=str(tmp_path / "srl.duckdb"))


@pytest.fixture
def instance():
    """A throwaway Dagster instance."""
    with dg.instance_for_test() as inst:
        yield inst
