"""The ``srl_steps`` asset: every expert trajectory split into step-wise SRL instances."""

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.duckdb_store import DuckDBStore
from resources.training import TrainingResource
from srl_assets.assets.lineage import lineage_metadata, read_table, table_result_version
from srl_assets.partitions import model_type_partitions
from srl_assets.prompts import trim_lore
from srl_assets.srl.step_instances import StepInstance, build_step_instances, reassemble

CHECK_REASSEMBLE = "steps_reassemble_trajectories"


class SrlStepsConfig(dg.Config):
    show_next_title: bool = Field(default=True, description="Show the next step's title in the "
                                  "context (the SRL paper reports it helps).")


def check_reassembly(store: DuckDBStore, model_type: str) -> dg.AssetCheckResult:
    steps = store.read("srl_steps", model_type)
    trajs = store.read("trajectories", model_type).set_index("task_id")["trajectory"].to_dict()
    bad = []
    for task_id, group in steps.groupby("task_id"):
        instances = [StepInstance(task_id, int(r.step_index), int(r.n_steps), r.prompt, r.target, r.next_title)
                     for r in group.itertuples()]
        if reassemble(instances) != trajs.get(task_id) or any(not i.target.strip() for i in instances):
            bad.append(task_id)
    missing = set(trajs) - set(steps["task_id"])
    return dg.AssetCheckResult(check_name=CHECK_REASSEMBLE, passed=len(steps) > 0 and not bad and not missing,
                               metadata={"instances": len(steps), "mismatched": len(bad),
                                         "trajectories_without_steps": len(missing)})


@dg.asset(partitions_def=model_type_partitions, deps=["trajectories"], group_name="data",
          pool="duckdb", kinds={"duckdb"}, code_version="1",
          check_specs=[dg.AssetCheckSpec(CHECK_REASSEMBLE, asset="srl_steps",
                                         description="Instances are non-empty and their targets "
                                                     "reassemble the trajectories.")],
          description="Context = task + lore + expert steps 1..k-1, target = step k.")
def srl_steps(context: dg.AssetExecutionContext, config: SrlStepsConfig, duckdb_store: DuckDBStore,
              training: TrainingResource) -> dg.MaterializeResult:
    model_type = context.partition_key
    trajs, trajs_up = read_table(context, duckdb_store, "trajectories")
    rows = [
        {"model_type": model_type, **vars(inst)}
        for r in trajs.itertuples()
        for inst in build_step_instances(r.task_id, r.prompt, trim_lore(r.lore, training.policy_lore_k),
                                         r.trajectory, config.show_next_title)
    ]
    df = pd.DataFrame(rows)
    duckdb_store.replace_partition("srl_steps", model_type, df)
    version, version_meta = table_result_version(duckdb_store, "srl_steps", model_type)
    sample = df.iloc[min(1, len(df) - 1)]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **version_meta, **lineage_metadata(trajs_up),
            "instances": len(df),
            "trajectories": len(trajs),
            "mean_steps_per_trajectory": round(len(df) / max(1, len(trajs)), 2),
            "policy_lore_k": training.policy_lore_k,
            "example": dg.MetadataValue.md(f"**Context**\n```\n{sample.prompt}\n```\n**Target**\n```\n{sample.target}\n```"),
        },
        check_results=[check_reassembly(duckdb_store, model_type)],
    )
