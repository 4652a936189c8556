"""Performance assets: ``performance_report`` -> ``weaknesses`` and ``model_selection``.

The PerformanceTracker evaluates the checkpoints that the partition's base_model, srl_checkpoint and
rlvr_checkpoint materializations published (their key and manifest sha256, as their lineage shows)
on fresh held-out tasks; the WeaknessDetector reads the deployed (RLVR) model's per-skill pass rates
of the report that the upstream ``performance_report`` materialization names; the
DynamicModelSelector picks, per skill, the candidate with the best quality for cost in that report.
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
from resources.duckdb_store import rows_digest
from srl_assets.assets.lineage import lineage_metadata, materializations, upstream
from srl_assets.assets.paid import paid_candidate_costs
from srl_assets.assets.task_examples import run_seed
from srl_assets.assets.training_support import fetch_checkpoint, png_markdown, run_child, upstream_checkpoint
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.partitions import model_type_partitions
from srl_assets.performance.generation_budget import budget_fits, trajectory_tokens
from srl_assets.performance.performance_tracker import (EvalRecord, PerformanceTracker, SkillStat, markdown_table,
                                                        per_skill_rows, plot_pass_rates, report_rows)
from srl_assets.performance.weakness_detector import WeaknessDetector
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.selection.dynamic_model_selector import (Candidate, DynamicModelSelector, SelectionWeights,
                                                         markdown_table as selection_table)
from srl_assets.training.stages import read_rows

HISTORY, SKILLS, WEAKNESSES = "performance_history", "performance_skills", "weaknesses"
DEPLOYED = "rlvr"
CHECK_COVERAGE, CHECK_NO_REGRESSION = "report_covers_every_skill", "rlvr_not_below_srl"
CHECK_BUDGET = "generation_budget_fits_experts"
# performance_report 2: 384 new tokens per task, not 320 (2026-12-04); raise one when a change of that asset's code or
# defaults changes what it makes from the same inputs.
CODE_VERSIONS = {"performance_report": "2", "weaknesses": "1", "model_selection": "1"}
# The candidates a report evaluates: the checkpoint each upstream training asset's materialization published.
CANDIDATE_ASSETS = {"base": "base_model", "srl": "srl_checkpoint", "rlvr": "rlvr_checkpoint"}


class PerformanceReportConfig(dg.Config):
    n_eval_tasks: int = Field(default=100, description="Fresh held-out tasks per model type.")
    seed: int | None = Field(default=None, description="Fix to reproduce; empty = derived from the run id.")
    max_new_tokens: int = Field(default=TRAJECTORY_MAX_NEW_TOKENS, description="Generation budget per task.")
    min_tasks_per_skill: int = Field(default=3, description="Evaluated tasks a skill needs, for every "
                                     "candidate, to count as covered by the report (its coverage check).")


def report_checks(reports, skills: list[str], min_tasks: int) -> list[dg.AssetCheckResult]:
    """The report's checks. Coverage: every skill has at least ``min_tasks`` evaluated tasks for every
    candidate. No regression (WARN): RLVR's interval reaches SRL's."""
    thin = sorted({skill for r in reports for skill in skills
                   if skill not in r.per_skill or r.per_skill[skill].n < min_tasks})
    checks = [dg.AssetCheckResult(check_name=CHECK_COVERAGE, passed=bool(reports) and not thin,
                                  metadata={"skills": len(skills), "candidates": len(reports),
                                            "min_tasks_per_skill": min_tasks,
                                            "uncovered_skills": ", ".join(thin) or "(none)"})]
    by_name = {r.candidate: r for r in reports}
    if "rlvr" in by_name and "srl" in by_name:
        rlvr, srl = by_name["rlvr"], by_name["srl"]
        checks.append(dg.AssetCheckResult(
            check_name=CHECK_NO_REGRESSION, passed=rlvr.ci_high >= srl.ci_low,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rlvr_pass_rate": rlvr.pass_rate, "rlvr_ci_high": rlvr.ci_high, "srl_ci_low": srl.ci_low}))
    return checks


@dg.asset(partitions_def=model_type_partitions, deps=["rlvr_checkpoint", "srl_checkpoint", "base_model"],
          group_name="performance", pool="gpu", kinds={"pytorch", "duckdb"},
          check_specs=[dg.AssetCheckSpec(CHECK_COVERAGE, asset="performance_report",
                                         description="The report has a pass rate for every skill of the model type."),
                       dg.AssetCheckSpec(CHECK_NO_REGRESSION, asset="performance_report",
                                         description="RLVR does not fall below SRL beyond the 95% intervals."),
                       dg.AssetCheckSpec(CHECK_BUDGET, asset="performance_report",
                                         description="No stored expert trajectory of the model type is longer "
                                                     "than the report's max_new_tokens (a longer one can never be "
                                                     "written whole).")],
          code_version=CODE_VERSIONS["performance_report"],
          description="The base, SRL and RLVR checkpoints of the partition's lineage on fresh held-out tasks.")
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
    consumed = {stage: upstream_checkpoint(context, duckdb_store, asset, stage)
                for stage, asset in CANDIDATE_ASSETS.items()}
    checkpoints = {stage: row for stage, (row, _) in consumed.items()}
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
    history_rows = pd.DataFrame(report_rows(reports, report_id=report_id, model_type=model_type, created_at=created))
    history_rows = history_rows.assign(seed=seed, rules_version=rules.version,
                                       checkpoint_key=history_rows.candidate.map(lambda c: checkpoints[c]["key"]),
                                       checkpoint_sha256=history_rows.candidate.map(lambda c: checkpoints[c]["sha256"]))
    duckdb_store.append(HISTORY, history_rows)
    duckdb_store.append(SKILLS, pd.DataFrame(per_skill_rows(reports, report_id=report_id, model_type=model_type, created_at=created)))
    history = duckdb_store.read(HISTORY, model_type).to_dict("records")
    plot_path = plot_pass_rates(reports, history, str(work_dir / "pass_rates.png"))
    by_name = {r.candidate: r for r in reports}
    named = {stage: {"key": row["key"], "sha256": row["sha256"]} for stage, row in checkpoints.items()}
    metadata = {**child_meta, "report_id": report_id, "n_eval_tasks": len(tasks), "seed": seed,
                "checkpoints": dg.MetadataValue.json(named), **lineage_metadata(*(up for _, up in consumed.values())),
                "table": dg.MetadataValue.md(markdown_table(reports)),
                "plot": png_markdown(plot_path, f"pass rate ({model_type})")}
    for stage in ("base", "srl", "rlvr"):
        metadata[f"pass_rate_{stage}"] = float(by_name[stage].pass_rate) if stage in by_name else float("nan")
    from srl_assets.performance.gallery import report_gallery  # previews of what each candidate wrote

    gallery = report_gallery(model_type, domain, rules, tasks, records, context.instance.root_directory, report_id)
    metadata.update(gallery=dg.MetadataValue.md(gallery.markdown), gallery_seconds=round(gallery.seconds, 2))
    weak = context.run.tags.get("srl/weak_skills")
    if weak and DEPLOYED in by_name:  # a weakness retraining (weakness_sensor): its weak skills before and after
        metadata["weak_skills_before_after"] = weak_skills_table(
            duckdb_store, model_type, context.run.tags.get("srl/report_id", ""), weak.split(","), by_name[DEPLOYED])
    _log_to_wandb(wandb, model_type, report_id, reports)
    checks = report_checks(reports, list(domain.skills), config.min_tasks_per_skill)
    checks.append(budget_check(context, duckdb_store, checkpoint_store, training, checkpoints["base"],
                               config.max_new_tokens))
    training.clean(work_dir)
    # Content: the report's rows (its id includes the run, so every report is a new version).
    version = rows_digest(duckdb_store.read(HISTORY, model_type, "report_id = ?", [report_id]))
    return dg.MaterializeResult(metadata=metadata, check_results=checks, data_version=dg.DataVersion(version))


def budget_check(context: dg.AssetExecutionContext, duckdb_store: DuckDBStore, checkpoint_store: CheckpointStore,
                 training: TrainingResource, base_row: dict, max_new_tokens: int) -> dg.AssetCheckResult:
    """WARN when the partition's stored expert trajectories do not fit the report's generation budget, counted
    with the base checkpoint's tokenizer (the SRL and RLVR checkpoints share it)."""
    try:
        trajectories = list(duckdb_store.read("trajectories", context.partition_key).trajectory)
    except LookupError:  # a store without the pipeline's trajectories (e.g. a report on imported checkpoints)
        trajectories = []
    lengths = trajectory_tokens(fetch_checkpoint(checkpoint_store, training, base_row, local=True), trajectories)
    passed, metadata = budget_fits(lengths, max_new_tokens)
    if not passed:
        context.log.warning(f"{metadata['over_budget']} of {len(lengths)} expert trajectories are longer than "
                            f"max_new_tokens={max_new_tokens} (the longest: {metadata['longest_expert_trajectory']} "
                            "tokens): tasks that need them cannot be passed; raise max_new_tokens")
    return dg.AssetCheckResult(check_name=CHECK_BUDGET, passed=passed, severity=dg.AssetCheckSeverity.WARN,
                               metadata=metadata)


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


def weak_skills_table(duckdb_store: DuckDBStore, model_type: str, before_report: str, skills: list[str],
                      after) -> dg.MetadataValue:
    """Markdown: each weak skill's pass rate in the report that triggered the retraining and now."""
    before = skill_stats(duckdb_store, model_type, before_report, DEPLOYED) if before_report else {}

    def rate(stat) -> str:
        return "n/a" if stat is None or not stat.n else f"{stat.passed / stat.n:.2f} ({stat.passed}/{stat.n})"

    lines = [f"| `{s}` | {rate(before.get(s))} | {rate(after.per_skill.get(s))} |" for s in skills]
    return dg.MetadataValue.md(f"Weak skills of report `{before_report}` ({DEPLOYED}), before and after this "
                               "retraining.\n\n| skill | before | after |\n|---|---:|---:|\n" + "\n".join(lines))


class WeaknessesConfig(dg.Config):
    threshold: float = Field(default=0.6, description="A skill below this pass rate is weak.")
    alpha: float = Field(default=0.05, description="Significance of a drop against the previous report.")
    min_n: int = Field(default=5, description="Tasks a skill needs before it is judged.")
    candidate: str = Field(default=DEPLOYED, description="Which checkpoint's skills are judged.")


@dg.asset(partitions_def=model_type_partitions, deps=["performance_report"], group_name="performance",
          pool="duckdb", kinds={"duckdb"}, code_version=CODE_VERSIONS["weaknesses"],
          description="Skills under the threshold or regressed beyond noise.")
def weaknesses(context: dg.AssetExecutionContext, config: WeaknessesConfig,
               duckdb_store: DuckDBStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    # The report of the upstream materialization, and the one its previous materialization named.
    report_ups = materializations(context.instance, "performance_report", model_type, limit=2)
    if not report_ups:
        raise LookupError(f"performance_report[{model_type}] has no materialization: materialize it first")
    report_id = str(report_ups[0].get("report_id"))
    current = skill_stats(duckdb_store, model_type, report_id, config.candidate)
    if not current:
        raise LookupError(f"{model_type}: no performance report for candidate {config.candidate!r} "
                          f"in report {report_id}")
    previous = (skill_stats(duckdb_store, model_type, str(report_ups[1].get("report_id")), config.candidate) or None
                if len(report_ups) > 1 else None)
    found = WeaknessDetector(config.threshold, config.alpha, config.min_n).detect(model_type, report_id, current, previous)
    detected = datetime.now(timezone.utc).isoformat()
    rows = [{**asdict(w), "candidate": config.candidate, "detected_at": detected, "run_id": context.run.run_id}
            for w in found]
    if rows:
        # Explicit dtypes: a first report has no previous values, and an all-None column would
        # otherwise create a column of DuckDB type NULL that later floats cannot be cast to.
        duckdb_store.append(WEAKNESSES, pd.DataFrame(rows).astype({"previous_pass_rate": "float64", "p_value": "float64"}))
    table = "\n".join(f"| `{w.skill}` | {w.pass_rate:.2f} | {w.reason} | {w.severity} | "
                      f"{'' if w.previous_pass_rate is None else f'{w.previous_pass_rate:.2f}'} |" for w in found)
    version = rows_digest(pd.DataFrame([asdict(w) for w in found]).assign(candidate=config.candidate)) if found \
        else rows_digest(pd.DataFrame({"report_id": [report_id], "candidate": [config.candidate]}))
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata={
        **lineage_metadata(report_ups[0]), "previous_report_id": str(report_ups[1].get("report_id"))
        if len(report_ups) > 1 else "",
        "report_id": report_id, "weak_skills": len(found), "threshold": config.threshold,
        "weaknesses": dg.MetadataValue.md("| skill | pass rate | reason | severity | previous |\n|---|---|---|---|---|\n"
                                          + (table or "| (none) | | | | |"))})


class ModelSelectionConfig(dg.Config):
    quality_weight: float = 1.0
    cost_weight: float = 0.1
    latency_weight: float = 0.05
    costs_per_1k_tokens: dict[str, float] = Field(default_factory=dict, description="Candidate -> price "
                                                  "(local checkpoints default to 0; paid fine-tunes set theirs).")


# paid_candidates is a dep because this reads what it writes (paid candidates' rows and prices):
# lineage shows it, and a new paid_candidates version marks a selection made from an older one
# stale. It is outside srl_pipeline, which never waits for it (a dep loads nothing; a never
# materialized one leaves this asset fresh).
@dg.asset(partitions_def=model_type_partitions, deps=["performance_report", "paid_candidates"],
          group_name="performance", pool="duckdb", kinds={"duckdb"}, code_version=CODE_VERSIONS["model_selection"],
          description="Per (model type, skill): the candidate with the best quality for cost (DynamicModelSelector).")
def model_selection(context: dg.AssetExecutionContext, config: ModelSelectionConfig,
                    duckdb_store: DuckDBStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    report_up = upstream(context, "performance_report")
    report_id = str(report_up.get("report_id"))
    latest = duckdb_store.read(HISTORY, model_type, "report_id = ?", [report_id])
    if latest.empty:
        raise LookupError(f"{model_type}: report {report_id} (performance_report run {report_up.run_id}) has no "
                          f"rows in {HISTORY}")
    # Paid candidates (paid_candidates appends their rows under this report) carry their real prices.
    paid = paid_candidate_costs(duckdb_store, model_type)
    candidates = {r.candidate: Candidate(r.candidate, "paid" if r.candidate in paid else "local",
                                         config.costs_per_1k_tokens.get(r.candidate, 0.0), float(r.mean_latency_s),
                                         **paid.get(r.candidate, {})) for r in latest.itertuples()}
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
    # Every local checkpoint of the selection's report: the serving API routes to the chosen ones and a
    # pin may name any candidate of this report, so retention keeps them all while it is current.
    report_checkpoints = dict(report_up.get("checkpoints") or {})
    version = rows_digest(duckdb_store.read("model_selection", model_type))
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata={
        **lineage_metadata(report_up), "checkpoints": dg.MetadataValue.json(report_checkpoints),
        "report_id": report_id, "responsibilities": len(selections),
        "chosen_counts": dg.MetadataValue.json(chosen),
        "selection": dg.MetadataValue.md(selection_table(selections))})
