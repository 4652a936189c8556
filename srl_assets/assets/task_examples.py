"""The ``task_examples`` asset: fresh train and held-out tasks from the DynamicExampleGenerator."""

import hashlib
from collections import Counter
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from srl_assets.assets.lineage import lineage_metadata, table_result_version, upstream
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.partitions import model_type_partitions


class TaskExamplesConfig(dg.Config):
    n_train: int = Field(default=240, description="Training tasks to draw.")
    n_eval: int = Field(default=60, description="Held-out evaluation tasks to draw.")
    seed: int | None = Field(default=None, description="Fix to reproduce a draw; empty = derived from the run id.")
    eval_fraction: float = Field(default=0.2, description="Share of the task space held out (hash split).")
    skill_weights: dict[str, float] = Field(default_factory=dict,
                                            description="Raise a skill's weight to draw more tasks exercising it.")


def run_seed(run_id: str) -> int:
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)


@dg.asset(partitions_def=model_type_partitions, deps=["rules"], group_name="data", pool="duckdb",
          kinds={"duckdb"}, code_version="1", description="Tasks drawn from the rules; train and eval never overlap.")
def task_examples(context: dg.AssetExecutionContext, config: TaskExamplesConfig,
                  rules_resource: RulesResource, duckdb_store: DuckDBStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    domain, rules = rules_resource.load(model_type)
    rules_up = upstream(context, "rules")
    if rules_up.data_version != rules.version:
        raise RuntimeError(f"the rules of {model_type} changed since their materialization (run {rules_up.run_id}: "
                           f"version {rules_up.data_version}, files now: {rules.version}): materialize `rules` first")
    seed = config.seed if config.seed is not None else run_seed(context.run.run_id)
    generator = DynamicExampleGenerator(domain, rules, eval_fraction=config.eval_fraction,
                                        skill_weights=config.skill_weights)
    tasks = generator.generate(config.n_train, "train", seed) + generator.generate(config.n_eval, "eval", seed)
    created = datetime.now(timezone.utc).isoformat()
    df = pd.DataFrame([{**t.to_row(), "run_id": context.run.run_id, "created_at": created} for t in tasks])
    duckdb_store.replace_partition("task_examples", model_type, df)
    version, version_meta = table_result_version(duckdb_store, "task_examples", model_type)
    coverage = Counter(s for t in tasks if t.split == "train" for s in t.skills)
    table = "\n".join(f"| `{s}` | {coverage.get(s, 0)} | {config.skill_weights.get(s, 1.0)} |" for s in domain.skills)
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata={
        **version_meta, **lineage_metadata(rules_up),
        "seed": seed,
        "n_train": config.n_train,
        "n_eval": config.n_eval,
        "rules_version": rules.version,
        "skill_coverage": dg.MetadataValue.md(f"| skill | train tasks | weight |\n|---|---|---|\n{table}"),
        "example_task": dg.MetadataValue.md(tasks[0].prompt),
    })
