"""Performance assets: ``performance_report`` -> ``weaknesses`` and ``model_selection``.

The PerformanceTracker evaluates every registered checkpoint of a model type (base, SRL, RLVR,
and any other stage in the checkpoint catalog) on fresh held-out tasks; the WeaknessDetector reads
the deployed (RLVR) model's per-skill pass rates; the DynamicModelSelector picks, per skill, the
candidate with the best quality for cost.
"""

import hashlib
from dataclasses import asdict
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.checkpoint_store import CheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from srl_assets.assets.task_examples import run_seed
from srl_assets.assets.training_support import CHECKPOINTS_TABLE, fetch_checkpoint, png_markdown, run_child
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.partitions import model_type_partitions
from srl_assets.performance.performance_tracker import (EvalRecord, PerformanceTracker, SkillStat, markdown_table,
                                                        per_skill_rows, plot_pass_rates, report_rows)
from srl_assets.performance.weakness_detector import WeaknessDetector
from srl_assets.selection.dynamic_model_selector import (Candidate, DynamicModelSelector, SelectionWeights,
                                                         markdown_table as selection_table)
from srl_assets.training.stages import read_rows

HISTORY, SKILLS, WEAKNESSES = "performance_history", "performance_skills", "weaknesses"
DEPLOYED = "rlvr"
CHECK_COVERAGE, CHECK_NO_REGRESSION = "report_covers_every_skill", "rlvr_not_below_srl"


class PerformanceReportConfig(dg.Config):
    n_eval_tasks: int = Field(default=100, description="Fresh held-out tasks per model type.")
    seed: int | None = Field(default=None, description="Fix to reproduce; empty = derived from the run id.")
    max_new_tokens: int = Field(default=320, description="Generation budget per task.")


def _latest_checkpoints(duckdb_store: DuckDBStore, model_type: str) -> dict[str, dict]:
    df = duckdb_store.read(CHECKPOINTS_TABLE, model_type)
    return {stage: group.sort_values("created_at").iloc[-1].to_dict() for stage, group in df.groupby("stage")}


@dg.asset(partitions_def=model_type_partitions, deps=["rlvr_checkpoint", "srl_checkpoint", "base_model"],
          group_name="performance", pool="gpu", kinds={"pytorch", "duckdb"},
          check_specs=[dg.AssetCheckSpec(CHECK_COVERAGE, asset="performance_report",
                                         description="The report has a pass rate for every skill of the model type."),
                       dg.AssetCheckSpec(CHECK_NO_REGRESSION, asset="performance_report",
                                         description="RLVR does not fall below SRL beyond the 95% intervals.")],
          description="Base, SRL, RLVR (and other registered) checkpoints on fresh held-out tasks.")
def performance_report(context: dg.AssetExecutionContext, config: PerformanceReportConfig,
                       duckdb_store: DuckDBStore, rules_resource: RulesResource, checkpoint_store: CheckpointStore,
                       training: TrainingResource, wandb: WandbResource,
                       pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    model_type = context.partition_key
    domain, rules = rules_resource.load(model_type)
    seed = config.seed if config.seed is not None else run_seed(context.run.run_id)
    tasks = DynamicExampleGenerator(domain, rules).generate(config.n_eval_tasks, "eval", seed)
    rows = [{"task": t.to_row(), "prompt": prompt}
            for t, prompt in zip(tasks, policy_prompts(tasks, rules, training.policy_lore_k), strict=True)]
    checkpoints = _latest_checkpoints(duckdb_store, model_type)
    candidates = {stage: fetch_checkpoint(checkpoint_store, training, row) for stage, row in checkpoints.items()}
    _, child_meta, out_dir, work_dir = run_child(
        context, pipes_subprocess_client, training, wandb, "evaluate", rows,
        {"candidates": candidates, "max_new_tokens": config.max_new_tokens},
        {"seed": seed, "checkpoints": {s: r["sha256"] for s, r in checkpoints.items()}},
        rules_dir=rules_resource.rules_dir)
    records = [EvalRecord(**{**r, "skills": tuple(r["skills"]), "failed_skills": tuple(r["failed_skills"])})
               for r in read_rows(out_dir / "records.jsonl")]
    reports = PerformanceTracker().summarize(records, model_type, list(domain.skills))
    report_id = hashlib.sha256(f"{context.run.run_id}:{model_type}".encode()).hexdigest()[:12]
    created = datetime.now(timezone.utc).isoformat()
    duckdb_store.append(HISTORY, pd.DataFrame(report_rows(reports, report_id=report_id, model_type=model_type, created_at=created))
                        .assign(seed=seed, rules_version=rules.version))
    duckdb_store.append(SKILLS, pd.DataFrame(per_skill_rows(reports, report_id=report_id, model_type=model_type, created_at=created)))
    history = duckdb_store.read(HISTORY, model_type).to_dict("records")
    plot_path = plot_pass_rates(reports, history, str(work_dir / "pass_rates.png"))
    by_name = {r.candidate: r for r in reports}
    metadata = {**child_meta, "report_id": report_id, "n_eval_tasks": len(tasks), "seed": seed,
                "table": dg.MetadataValue.md(markdown_table(reports)),
                "plot": png_markdown(plot_path, f"pass rate ({model_type})")}
    for stage in ("base", "srl", "rlvr"):
        metadata[f"pass_rate_{stage}"] = float(by_name[stage].pass_rate) if stage in by_name else float("nan")
    _log_to_wandb(wandb, model_type, report_id, reports)
    covered = all(skill in r.per_skill for r in reports for skill in domain.skills)
    checks = [dg.AssetCheckResult(check_name=CHECK_COVERAGE, passed=covered,
                                  metadata={"skills": len(domain.skills), "candidates": len(reports)})]
    if "rlvr" in by_name and "srl" in by_name:
        rlvr, srl = by_name["rlvr"], by_name["srl"]
        checks.append(dg.AssetCheckResult(
            check_name=CHECK_NO_REGRESSION, passed=rlvr.ci_high >= srl.ci_low,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rlvr_pass_rate": rlvr.pass_rate, "rlvr_ci_high": rlvr.ci_high, "srl_ci_low": srl.ci_low}))
    training.clean(work_dir)
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _log_to_wandb(wandb: WandbResource, model_type: str, report_id: str, reports) -> None:
    if wandb.mode == "disabled":
        return
    run = wandb.init(f"performance-{model_type}-{report_id}", {"model_type": model_type, "report_id": report_id},
                     group=model_type)
    try:
        run.log({f"pass_rate/{r.candidate}": r.pass_rate for r in reports}
                | {f"mean_score/{r.candidate}": r.mean_score for r in reports})
    finally:
        run.finish()


def skill_stats(duckdb_store: DuckDBStore, model_type: str, report_id: str, candidate: str) -> dict[str, SkillStat]:
    df = duckdb_store.read(SKILLS, model_type, "report_id = ? AND candidate = ?", [report_id, candidate])
    return {r.skill: SkillStat(int(r.n), int(r.passed), None if pd.isna(r.pass_rate) else float(r.pass_rate),
                               float(r.ci_low), float(r.ci_high)) for r in df.itertuples()}


class WeaknessesConfig(dg.Config):
    threshold: float = Field(default=0.6, description="A skill below this pass rate is weak.")
    alpha: float = Field(default=0.05, description="Significance of a drop against the previous report.")
    min_n: int = Field(default=5, description="Tasks a skill needs before it is judged.")
    candidate: str = Field(default=DEPLOYED, description="Which checkpoint's skills are judged.")


@dg.asset(partitions_def=model_type_partitions, deps=["performance_report"], group_name="performance",
          pool="duckdb", kinds={"duckdb"}, description="Skills under the threshold or regressed beyond noise.")
def weaknesses(context: dg.AssetExecutionContext, config: WeaknessesConfig,
               duckdb_store: DuckDBStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    reports = (duckdb_store.read(HISTORY, model_type, "candidate = ?", [config.candidate])
               .sort_values("created_at").report_id.drop_duplicates().tolist())
    if not reports:
        raise LookupError(f"{model_type}: no performance report for candidate {config.candidate!r}")
    current = skill_stats(duckdb_store, model_type, reports[-1], config.candidate)
    previous = skill_stats(duckdb_store, model_type, reports[-2], config.candidate) if len(reports) > 1 else None
    found = WeaknessDetector(config.threshold, config.alpha, config.min_n).detect(model_type, reports[-1], current, previous)
    detected = datetime.now(timezone.utc).isoformat()
    rows = [{**asdict(w), "candidate": config.candidate, "detected_at": detected, "run_id": context.run.run_id}
            for w in found]
    if rows:
        # Explicit dtypes: a first report has no previous values, and an all-None column would
        # otherwise create a column of DuckDB type NULL that later floats cannot be cast to.
        duckdb_store.append(WEAKNESSES, pd.DataFrame(rows).astype({"previous_pass_rate": "float64", "p_value": "float64"}))
    table = "\n".join(f"| `{w.skill}` | {w.pass_rate:.2f} | {w.reason} | {w.severity} | "
                      f"{'' if w.previous_pass_rate is None else f'{w.previous_pass_rate:.2f}'} |" for w in found)
    return dg.MaterializeResult(metadata={
        "report_id": reports[-1], "weak_skills": len(found), "threshold": config.threshold,
        "weaknesses": dg.MetadataValue.md("| skill | pass rate | reason | severity | previous |\n|---|---|---|---|---|\n"
                                          + (table or "| (none) | | | | |"))})


class ModelSelectionConfig(dg.Config):
    quality_weight: float = 1.0
    cost_weight: float = 0.1
    latency_weight: float = 0.05
    costs_per_1k_tokens: dict[str, float] = Field(default_factory=dict, description="Candidate -> price "
                                                  "(local checkpoints default to 0; paid fine-tunes set theirs).")


@dg.asset(partitions_def=model_type_partitions, deps=["performance_report"], group_name="performance",
          pool="duckdb", kinds={"duckdb"}, description="Per (model type, skill): the candidate with the best "
          "quality for cost (DynamicModelSelector).")
def model_selection(context: dg.AssetExecutionContext, config: ModelSelectionConfig,
                    duckdb_store: DuckDBStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    history = duckdb_store.read(HISTORY, model_type).sort_values("created_at")
    report_id = history.report_id.iloc[-1]
    latest = history[history.report_id == report_id]
    candidates = {r.candidate: Candidate(r.candidate, "local", config.costs_per_1k_tokens.get(r.candidate, 0.0),
                                         float(r.mean_latency_s)) for r in latest.itertuples()}
    per_skill: dict[str, dict[str, SkillStat]] = {}
    for name in candidates:
        for skill, stat in skill_stats(duckdb_store, model_type, report_id, name).items():
            per_skill.setdefault(skill, {})[name] = stat
    selector = DynamicModelSelector(SelectionWeights(config.quality_weight, config.cost_weight, config.latency_weight))
    selections = selector.select_all(model_type, per_skill, candidates)
    duckdb_store.replace_partition("model_selection", model_type, pd.DataFrame(
        [{**asdict(s), "report_id": report_id} for s in selections]).astype(
        {"runner_up": pd.StringDtype(), "runner_up_score": "float64", "margin": "float64"}))
    chosen = pd.Series([s.chosen for s in selections]).value_counts().to_dict()
    return dg.MaterializeResult(metadata={"report_id": report_id, "responsibilities": len(selections),
                                          "chosen_counts": dg.MetadataValue.json(chosen),
                                          "selection": dg.MetadataValue.md(selection_table(selections))})
