"""The Dagster code location: ``srl_assets.definitions:defs``."""

import dagster as dg

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from srl_assets import settings
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import trajectories
from srl_assets.partitions import model_type_partitions

data_assets = [rules, task_examples, trajectories, srl_steps]

srl_pipeline_job = dg.define_asset_job(
    "srl_pipeline", selection=dg.AssetSelection.assets(*data_assets),
    partitions_def=model_type_partitions,
    description="The whole chain for one model type (one run per partition).")

defs = dg.Definitions(
    assets=data_assets,
    jobs=[srl_pipeline_job],
    resources={
        "duckdb_store": DuckDBStore(database=settings.duckdb_path()),
        "rules_resource": RulesResource(),
        "teacher": TeacherResource(),
    },
)
