"""The ``trajectories`` asset: verified expert trajectories from the three-model collaboration."""

import json
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from srl_assets.assets.lineage import lineage_metadata, read_table, table_result_version
from srl_assets.collaboration.collaboration_orchestrator import CollaborationOrchestrator
from srl_assets.collaboration.lore_retriever import LoreRetriever, lore_block
from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import Task
from srl_assets.partitions import model_type_partitions
from srl_assets.trajectory import parse_trajectory

CHECK_VERIFIED = "every_trajectory_passes_verifier"


class TrajectoriesConfig(dg.Config):
    lore_k: int = Field(default=2, description="Lore passages retrieved per task.")
    max_attempts: int = Field(default=3, description="Teacher attempts per task before it is rejected.")


def tasks_from(df: pd.DataFrame, split: str | None = None) -> list[Task]:
    """Tasks of ``task_examples`` rows (one split, or all)."""
    if split:
        df = df[df.split == split]
    return [Task.from_row(row) for row in df.to_dict("records")]


def load_tasks(store: DuckDBStore, model_type: str, split: str | None = None) -> list[Task]:
    """The stored tasks of a partition, as they are now (tools; assets read them through their lineage)."""
    return tasks_from(store.read("task_examples", model_type), split)


def verify_stored(store: DuckDBStore, rules_resource: RulesResource, model_type: str) -> dg.AssetCheckResult:
    """Re-read what was stored and verify every trajectory against its task."""
    domain, rules = rules_resource.load(model_type)
    verifier = Verifier(domain, rules)
    tasks = {t.task_id: t for t in load_tasks(store, model_type)}
    rows = store.read("trajectories", model_type).to_dict("records")
    failed = [r["task_id"] for r in rows if not verifier.verify_trajectory(tasks[r["task_id"]], r["trajectory"]).passed]
    return dg.AssetCheckResult(check_name=CHECK_VERIFIED, passed=bool(rows) and not failed,
                               metadata={"checked": len(rows), "failed": len(failed),
                                         "failed_task_ids": ", ".join(failed[:10])})


@dg.asset(partitions_def=model_type_partitions, deps=["task_examples"], group_name="data",
          pool="duckdb", kinds={"duckdb"}, code_version="1",
          check_specs=[dg.AssetCheckSpec(CHECK_VERIFIED, asset="trajectories",
                                         description="Every stored trajectory passes the verifier.")],
          description="LoreRetriever -> TeacherPlanner -> Verifier per training task; only verified kept.")
def trajectories(context: dg.AssetExecutionContext, config: TrajectoriesConfig,
                 rules_resource: RulesResource, teacher: TeacherResource,
                 duckdb_store: DuckDBStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    domain, rules = rules_resource.load(model_type)
    task_rows, tasks_up = read_table(context, duckdb_store, "task_examples")
    tasks = tasks_from(task_rows, "train")
    orchestrator = CollaborationOrchestrator(LoreRetriever(rules, k=config.lore_k),
                                             teacher.get_teacher(domain, rules),
                                             Verifier(domain, rules), max_attempts=config.max_attempts)
    result = orchestrator.run(tasks)
    if not result.accepted and len(result.teacher_errors) == len(tasks):
        # every task failed at the provider: its own error, not a verifier statistic
        raise RuntimeError(f"{model_type}: the teacher failed on all {len(tasks)} tasks; last error: "
                           f"{result.teacher_errors[-1]}")
    if not result.accepted:
        raise RuntimeError(f"{model_type}: the teacher produced no verified trajectory for "
                           f"{len(tasks)} tasks; rejection reasons: {dict(result.rejection_reasons)}")
    created = datetime.now(timezone.utc).isoformat()
    df = pd.DataFrame([{
        "model_type": model_type, "task_id": a.task.task_id, "prompt": a.task.prompt,
        "lore": lore_block(a.lore), "lore_ids": json.dumps([p.rule_id for p in a.lore]),
        "trajectory": a.text, "n_steps": len(parse_trajectory(a.text).steps),
        "score": a.verdict.score, "attempts": a.attempts, "teacher": teacher.kind,
        "rules_version": rules.version, "created_at": created,
    } for a in result.accepted])
    duckdb_store.replace_partition("trajectories", model_type, df)
    version, version_meta = table_result_version(duckdb_store, "trajectories", model_type)
    example = result.accepted[0]
    reasons = "\n".join(f"| `{k}` | {v} |" for k, v in result.rejection_reasons.most_common()) or "| (none) | 0 |"
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **version_meta, **lineage_metadata(tasks_up),
            "accepted": len(result.accepted),
            "rejected": len(result.rejected_tasks),
            "rejected_attempts": result.rejected_attempts,
            "acceptance_rate": round(result.acceptance_rate, 4),
            "rejection_reasons": dg.MetadataValue.md(f"| failed skill | attempts |\n|---|---|\n{reasons}"),
            "preview": dg.MetadataValue.md(
                f"**Task:** {example.task.prompt}\n\n**Lore:** "
                f"{', '.join(p.rule_id for p in example.lore)}\n\n```\n{example.text}\n```"),
        },
        check_results=[verify_stored(duckdb_store, rules_resource, model_type)],
    )
