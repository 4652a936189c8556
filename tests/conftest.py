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


@pytest.fixture
def store(tmp_path):
    """An empty DuckDB store in the test's own folder."""
    return DuckDBStore(database=str(tmp_path / "srl.duckdb"))


@pytest.fixture
def instance():
    """A throwaway Dagster instance."""
    with dg.instance_for_test() as inst:
        yield inst
