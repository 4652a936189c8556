"""The Dagster code location: ``srl_assets.definitions:defs``."""

import dagster as dg

from resources.checkpoint_store import LocalCheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from srl_assets import dagster_fixes  # noqa: F401  (runs waiting for a pool slot sleep instead of spinning)
from srl_assets import settings
from sensors.rules_sensor import build_rules_change_sensor
from sensors.weakness_sensor import build_weakness_sensor
from srl_assets.assets.performance import model_selection, performance_report, weaknesses
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.training import base_model, normalized_rewards, rlvr_checkpoint, srl_checkpoint
from srl_assets.assets.trajectories import trajectories
from srl_assets.partitions import model_type_partitions

data_assets = [rules, task_examples, trajectories, srl_steps]
training_assets = [base_model, normalized_rewards, srl_checkpoint, rlvr_checkpoint]
performance_assets = [performance_report, weaknesses, model_selection]
all_assets = [*data_assets, *training_assets, *performance_assets]

srl_pipeline_job = dg.define_asset_job(
    "srl_pipeline", selection=dg.AssetSelection.assets(*all_assets),
    partitions_def=model_type_partitions,
    description="The whole chain for one model type (one run per partition).")


def build_resources() -> dict:
    home = settings.dagster_home()
    return {
        "duckdb_store": DuckDBStore(database=settings.duckdb_path()),
        "rules_resource": RulesResource(),
        "teacher": TeacherResource(),
        "checkpoint_store": LocalCheckpointStore(root=settings.checkpoint_root()),
        "training": TrainingResource(work_root=str(home / "work"), policy_lore_k=settings.policy_lore_k()),
        "wandb": WandbResource(dir=str(home / "wandb"), mode=dg.EnvVar("WANDB_MODE").get_value("offline"),
                               api_key=dg.EnvVar("WANDB_API_KEY").get_value()),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


defs = dg.Definitions(
    assets=all_assets,
    # One process per run: the heavy work already runs in Pipes children, and per-step processes
    # would each re-import the ML stack. Pools still serialize ops across runs.
    executor=dg.in_process_executor,
    jobs=[srl_pipeline_job],
    sensors=[build_weakness_sensor(srl_pipeline_job), build_rules_change_sensor(srl_pipeline_job)],
    resources=build_resources(),
)
