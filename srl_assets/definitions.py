"""The Dagster code location: ``srl_assets.definitions:defs``."""

import dagster as dg

from resources.checkpoint_store import checkpoint_store_from_uri
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import ChildProcessClient, TrainingResource, child_env_names
from resources.wandb_resource import WandbResource
from srl_assets import dagster_fixes  # noqa: F401  (runs waiting for a pool slot sleep instead of spinning)
from srl_assets import settings
from resources.paid import paid_resource_from_env
from sensors.paid_finetune_sensor import build_paid_finetune_sensor
from sensors.rules_sensor import build_rules_change_sensor
from sensors.weakness_sensor import build_weakness_sensor
from srl_assets.assets.paid import paid_candidates, paid_finetune_jobs
from srl_assets.assets.performance import model_selection, performance_report, weaknesses
from srl_assets.assets.recipes import recipe_comparison
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

# Hosted fine-tuning: its own job, never part of srl_pipeline (the demo must not call a provider).
paid_assets = [paid_finetune_jobs, paid_candidates]
paid_finetune_job = dg.define_asset_job(
    "paid_finetune", selection=dg.AssetSelection.assets(*paid_assets), partitions_def=model_type_partitions,
    description="Datasets, estimates and (opted in) hosted fine-tuning jobs; tuned models as candidates.")


# Which recipe works best for a model type: its own job (the data assets it needs, then the comparison).
recipe_comparison_job = dg.define_asset_job(
    "compare_recipes", selection=dg.AssetSelection.assets(recipe_comparison).upstream(),
    partitions_def=model_type_partitions,
    description="SFT-only / RLVR-only / SRL-only / SRL→RLVR from one start, paired on the same held-out tasks.")


def _teacher() -> TeacherResource:
    t = settings.teacher()
    # The key stays an unresolved EnvVar: Dagster resolves it inside the run, and the UI shows its name.
    return TeacherResource(kind=t.kind, base_url=t.base_url, model=t.model, timeout_s=t.timeout_s,
                           api_key=dg.EnvVar("TEACHER_API_KEY") if t.kind == "openai" and t.has_key else None)


def _wandb(home) -> WandbResource:
    w = settings.wandb()
    return WandbResource(dir=str(home / "wandb"), mode=w.mode, project=w.project, entity=w.entity,
                         api_key=dg.EnvVar("WANDB_API_KEY") if w.has_key else None)


def build_resources() -> dict:
    """Every resource, configured from the environment (README, Configuration); no code edits."""
    home = settings.dagster_home()
    checkpoint_uri = settings.checkpoint_uri()
    return {
        "duckdb_store": DuckDBStore(database=settings.duckdb_path()),
        "rules_resource": RulesResource(),
        "teacher": _teacher(),
        "checkpoint_store": checkpoint_store_from_uri(checkpoint_uri),
        "training": TrainingResource(work_root=str(home / "work"), policy_lore_k=settings.policy_lore_k(),
                                     job_store_uri=checkpoint_uri if checkpoint_uri.startswith("s3://") else None),
        "wandb": _wandb(home),
        # Children get the variables they need, never the whole environment of the webserver or daemon.
        "paid": paid_resource_from_env(),
        "pipes_subprocess_client": ChildProcessClient(inherit=child_env_names(checkpoint_uri),
                                                      warm_start=settings.warm_start()),
    }


defs = dg.Definitions(
    assets=[*all_assets, *paid_assets, recipe_comparison],
    # One process per run: the heavy work already runs in Pipes children, and per-step processes
    # would each re-import the ML stack. Pools still serialize ops across runs.
    executor=dg.in_process_executor,
    jobs=[srl_pipeline_job, paid_finetune_job, recipe_comparison_job],
    sensors=[build_weakness_sensor(srl_pipeline_job), build_rules_change_sensor(srl_pipeline_job),
             build_paid_finetune_sensor(paid_finetune_job, srl_pipeline_job)],
    resources=build_resources(),
)
