"""Paid fine-tuning assets: ``paid_finetune_jobs`` → (``paid_finetune_sensor``) → ``paid_candidates``.

They live in their own job (``paid_finetune``), never in ``srl_pipeline``: the demo must not call a
provider. Both run in the ``paid`` pool, not ``gpu``: they wait on HTTP, not on an accelerator.

Preference pairs come from the partition's own policy: ``paid_finetune_jobs`` samples the checkpoint
that the latest ``rlvr_checkpoint`` materialization names (key and sha256, as lineage shows), k times
per task, and the Verifier ranks the samples (``paid.datasets.policy_preference_pairs``). That
sampling runs on CPU in this step's process, not in the ``gpu`` pool: it is a few hundred short
completions, and holding the accelerator's pool for it would stall training runs for a job that
otherwise only waits on HTTP. The expert-against-mutated-copies pairs stay as an explicit fallback
(``preference_source: mutated``) for a partition with no local checkpoint yet.

Where paid candidates are evaluated: ``performance_report`` holds the ``gpu`` pool for the local
checkpoints, and a hosted model needs no GPU, so ``paid_candidates`` evaluates each registered
candidate itself, on the same seeded held-out tasks as the partition's latest performance report
(the seed and the task count are in its rows), and appends its rows under that report's id. So
``model_selection`` weighs local and paid candidates on identical tasks, with the paid ones' real
prices; a new performance report is joined by the paid candidates the next time
``paid_candidates`` runs (the sensor requests it, followed by ``model_selection``).
"""

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.checkpoint_store import CheckpointStore
from resources.duckdb_store import DuckDBStore, rows_digest
from resources.paid import PaidFineTuningResource
from resources.rules import RulesResource
from resources.training import TrainingResource
from srl_assets.assets.lineage import lineage_metadata, materializations, read_table
from srl_assets.assets.training_support import fetch_checkpoint, upstream_checkpoint
from srl_assets.assets.trajectories import load_tasks
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.paid.base import DatasetFormatError, JobStatus, ProviderRefused, SpendCapExceeded, TunedModel
from srl_assets.paid.datasets import build_source, pair_provenance, pairs_from_policy, sample_policy, write_jsonl
from srl_assets.paid.evaluation import PaidEvalConfig, evaluate_paid
from srl_assets.paid.grader import GraderUnavailable, openai_python_grader, vertex_reward_snippet
from srl_assets.paid.job_store import JobStore, SubmitRequest, refresh, submit
from srl_assets.partitions import model_type_partitions
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.performance.performance_tracker import PerformanceTracker, per_skill_rows, report_rows

HISTORY, SKILLS, EVALUATIONS = "performance_history", "performance_skills", "paid_evaluations"
# Reinforcement graders generated from the Verifier, per provider (Bedrock's needs a Lambda: not offered).
GRADERS = {"openai": openai_python_grader, "vertex": vertex_reward_snippet}


class PaidJobSpec(dg.Config):
    provider: str = Field(description="Registered provider: openai | vertex | bedrock.")
    base_model: str = Field(description="Base model id at that provider (see its base_models()).")
    method: str | None = Field(default=None, description="Override of the top-level method for this provider.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Provider hyperparameters "
                                            "(OpenAI n_epochs, batch_size, learning_rate_multiplier, beta; "
                                            "max_hours bounds per-hour estimates). None values are not sent.")


class PaidFinetuneJobsConfig(dg.Config):
    jobs: list[PaidJobSpec] = Field(default_factory=lambda: [PaidJobSpec(provider="openai",
                                                                         base_model="gpt-4.1-mini-2025-04-14")],
                                    description="One hosted job per entry.")
    method: str = Field(default="supervised", description="supervised | preference | reinforcement.")
    dry_run: bool = Field(default=True, description="Write datasets and estimates only; submit nothing.")
    opt_in_model_types: list[str] = Field(default_factory=list, description="Model types whose data may leave "
                                          "the machine; any other partition is a dry run whatever dry_run says.")
    max_spend_usd: float = Field(default=20.0, description="Per-job cap on the estimated training cost.")
    cumulative_cap_usd: float = Field(default=100.0, description="Cap on all recorded jobs' cost together "
                                      "(measured where known, else estimated), this one included.")
    preference_source: Literal["policy", "mutated"] = Field(
        default="policy", description="Where preference pairs come from (only when a job's method is preference): "
        "policy = samples of the partition's RLVR checkpoint ranked by the Verifier (needs rlvr_checkpoint "
        "materialized); mutated = the expert trajectory against copies broken by the domain's mutate "
        "(a fallback that needs no checkpoint, but teaches nothing about the policy's own mistakes).")
    preference_samples_per_task: int = Field(default=4, ge=2, description="Policy samples per task (k); a task "
                                             "gives a pair only when its samples differ in verdict.")
    preference_temperature: float = Field(default=0.8, gt=0, description="Sampling temperature of the policy "
                                          "samples; 0 would make the k samples one greedy answer.")
    preference_max_tasks: int = Field(default=64, ge=1, description="Tasks sampled (the first verified "
                                      "trajectories); sampling runs on CPU, so keep it small.")
    preference_max_new_tokens: int = Field(default=TRAJECTORY_MAX_NEW_TOKENS, ge=1, description="Generation "
                                           "budget per sample (as performance_report).")
    preference_seed: int = Field(default=0, description="Sampling seed: a retried run draws the same samples.")


@dg.asset(partitions_def=model_type_partitions, deps=["trajectories", "rlvr_checkpoint"], group_name="paid",
          pool="paid", kinds={"duckdb"}, description="Datasets (preference pairs from the RLVR policy's verified "
          "samples), cost estimates and (opted in, not a dry run, under the caps) hosted fine-tuning jobs, "
          "recorded before they are created.")
def paid_finetune_jobs(context: dg.AssetExecutionContext, config: PaidFinetuneJobsConfig, duckdb_store: DuckDBStore,
                       rules_resource: RulesResource, training: TrainingResource, paid: PaidFineTuningResource,
                       checkpoint_store: CheckpointStore) -> dg.MaterializeResult:
    model_type = context.partition_key
    domain, rules = rules_resource.load(model_type)
    traj_df, traj_up = read_table(context, duckdb_store, "trajectories")
    rows = traj_df.to_dict("records")
    tasks = load_tasks(duckdb_store, model_type)
    store, out_dir = JobStore(duckdb_store), Path(duckdb_store.database).parent / "paid_datasets" / model_type
    ups, pref_meta, sha = [traj_up], {}, None
    wants_pairs = any((spec.method or config.method) == "preference" for spec in config.jobs)
    pairs = [] if not wants_pairs else None  # no job trains on pairs: no sampling, no checkpoint needed
    if wants_pairs and config.preference_source == "policy":
        pairs, stats, ckpt, rlvr_up = _policy_pairs(context, config, duckdb_store, checkpoint_store, training,
                                                    rows, tasks, domain, rules)
        ups.append(rlvr_up)
        sha = ckpt["sha256"]
        pref_meta.update(stats.as_metadata(), policy_checkpoint_key=ckpt["key"], policy_checkpoint_sha256=sha)
    # pairs None: the explicit fallback (preference_source: mutated), built by build_source
    source, counts = build_source(model_type, rows, tasks, domain, rules, training.policy_lore_k, preference=pairs)
    if wants_pairs:
        pref_meta["preference_source"] = config.preference_source
        # Where each side of each pair came from: the provider formats have no room for it.
        write_jsonl(pair_provenance(source.preference, sha), out_dir / "preference_pairs.provenance.jsonl")
    counts.update(pref_meta)
    share = not config.dry_run and model_type in config.opt_in_model_types
    if not config.dry_run and not share:
        context.log.warning(f"{model_type} is not in opt_in_model_types: dry run, no data leaves the machine")
    lines, refused = [], []
    for spec in config.jobs:
        method = spec.method or config.method
        hp = dict(spec.hyperparameters)
        if method == "reinforcement" and spec.provider in GRADERS and "grader" not in hp:
            try:
                hp["grader"] = GRADERS[spec.provider](model_type, rules)
            except GraderUnavailable as exc:
                refused.append(f"{spec.provider} {spec.base_model}: no grader: {exc}")
                continue
        req = SubmitRequest(model_type, spec.provider, spec.base_model, method, hp, config.max_spend_usd,
                            config.cumulative_cap_usd, submit=share, suffix=f"srl-{model_type}")
        try:
            res = submit(paid.provider(spec.provider), store, source, req, out_dir, context.log.info)
        except (ProviderRefused, SpendCapExceeded, DatasetFormatError) as exc:
            refused.append(str(exc))
            lines.append(f"| {spec.provider} | `{spec.base_model}` | {method} | – | – | refused: {exc} |")
            continue
        lines.append(f"| {spec.provider} | `{spec.base_model}` | {method} | {res.n_examples} | "
                     f"${res.estimate.usd:.2f} ({res.estimate.detail}) | {res.status} {res.job_id or ''} |")
    table = ("| provider | base model | method | examples | estimate | outcome |\n|---|---|---|---:|---|---|\n"
             + "\n".join(lines))
    metadata = {**counts, **lineage_metadata(*ups), "dry_run": not share, "jobs": dg.MetadataValue.md(table),
                "datasets_dir": str(out_dir), "committed_spend_usd": round(store.committed_spend(), 4)}
    if refused:
        # Loud: a refused or over-cap job is a decision the user must see, not a silent skip.
        raise dg.Failure(description="; ".join(refused), metadata=metadata)
    # Content version: this partition's job rows (ids, states, estimates), not when they were touched.
    version = rows_digest(store.jobs("model_type = ?", [model_type]).drop(columns=["created_at", "updated_at"]))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


def _policy_pairs(context: dg.AssetExecutionContext, config: PaidFinetuneJobsConfig, duckdb_store: DuckDBStore,
                  checkpoint_store: CheckpointStore, training: TrainingResource, rows: list[dict], tasks, domain,
                  rules):
    """(pairs, their stats, the checkpoint sampled, the rlvr_checkpoint materialization that names it)."""
    model_type = context.partition_key
    try:
        ckpt, rlvr_up = upstream_checkpoint(context, duckdb_store, "rlvr_checkpoint", "rlvr")
    except LookupError as exc:
        raise dg.Failure(description=(
            f"preference_source 'policy' samples the partition's local policy, but {exc}. Materialize "
            f"rlvr_checkpoint for {model_type} (srl_pipeline), or set preference_source: mutated to pair the "
            "expert trajectory with mutated copies instead.")) from exc
    # CPU, in this process (see the module docstring): the paid pool never waits on the gpu pool.
    path = fetch_checkpoint(checkpoint_store, training, ckpt, local=True)
    context.log.info(f"{model_type}: sampling {config.preference_samples_per_task} per task at T="
                     f"{config.preference_temperature} from {ckpt['key']} ({ckpt['sha256'][:12]}) on CPU")
    pairs, stats = pairs_from_policy(
        rows, tasks, domain, rules, training.policy_lore_k,
        lambda prompts: sample_policy(path, prompts, config.preference_samples_per_task,
                                      config.preference_temperature, config.preference_max_new_tokens,
                                      seed=config.preference_seed),
        config.preference_max_tasks)
    if stats.skipped_task_ids:
        context.log.info(f"{model_type}: {stats.skipped_no_contrast} task(s) gave no contrast (skipped): "
                         + ", ".join(stats.skipped_task_ids[:20]))
    return pairs, stats, ckpt, rlvr_up


class PaidCandidatesConfig(dg.Config):
    concurrency: int = Field(default=4, description="Parallel inference calls per candidate.")
    max_attempts: int = Field(default=5, description="Attempts per call (retries on 429/5xx/timeouts).")
    timeout_s: float = Field(default=60.0, description="Timeout of one inference call.")
    max_new_tokens: int = Field(default=TRAJECTORY_MAX_NEW_TOKENS, description="Generation budget per task (as "
                                "performance_report).")


@dg.asset(partitions_def=model_type_partitions, deps=["paid_finetune_jobs", "performance_report"],
          group_name="paid", pool="paid", kinds={"duckdb"},
          description="Succeeded hosted jobs registered as candidates paid:<provider>:<id> and evaluated on the "
          "latest performance report's held-out tasks through their inference API.")
def paid_candidates(context: dg.AssetExecutionContext, config: PaidCandidatesConfig, duckdb_store: DuckDBStore,
                    rules_resource: RulesResource, training: TrainingResource,
                    paid: PaidFineTuningResource) -> dg.MaterializeResult:
    model_type = context.partition_key
    store = JobStore(duckdb_store)
    for row in store.pending(model_type).to_dict("records"):  # the sensor may not be running
        refresh(paid.provider(row["provider"]), store, row, context.log.info)
    registered = register_succeeded(store, paid, model_type, context.log.info)
    domain, rules = rules_resource.load(model_type)
    report = _consumed_report(context.instance, model_type)
    evaluated, lines = [], []
    cands = store.candidates(model_type)
    if report is None:
        context.log.warning(f"{model_type}: no performance report yet; candidates are evaluated on its tasks "
                            f"the next time paid_candidates runs after performance_report")
    else:
        report_id, seed, n = report
        hist = duckdb_store.read(HISTORY, model_type, "report_id = ?", [report_id])
        done = set(hist.candidate)
        rules_version = str(hist.rules_version.iloc[0]) if "rules_version" in hist and not hist.empty else rules.version
        todo = [c for c in cands.to_dict("records") if c["candidate"] not in done]
        if todo:
            tasks = DynamicExampleGenerator(domain, rules).generate(n, "eval", seed)
            prompts = policy_prompts(tasks, rules, training.policy_lore_k)
            cfg = PaidEvalConfig(config.concurrency, config.max_attempts, config.timeout_s,
                                 max_new_tokens=config.max_new_tokens)
            verifier = Verifier(domain, rules)
            for c in todo:
                tuned = TunedModel(c["provider"], c["model_id"], c["base_model"], c["job_id"],
                                   c["input_per_1k_usd"], c["output_per_1k_usd"], c["hosting_per_hour_usd"])
                result = evaluate_paid(paid.provider(c["provider"]), tuned, c["candidate"], tasks, prompts, verifier, cfg)
                _append_report(duckdb_store, model_type, report_id, seed, rules.version, domain, result)
                evaluated.append(c["candidate"])
                rep = result.records
                lines.append(f"| {c['candidate']} | `{c['model_id']}` | {sum(r.passed for r in rep)}/{len(rep)} | "
                             f"{result.input_tokens} / {result.output_tokens} | ${result.cost_usd:.4f} | "
                             f"{result.mean_latency_s:.2f} s | {result.attempts} |")
        if rules_version != rules.version:
            context.log.warning(f"report {report_id} used rules {rules_version}, now {rules.version}: "
                                "paid candidates are evaluated on tasks drawn from the current rules")
    table = ("| candidate | model | passed | tokens in / out | cost | latency | calls |\n|---|---|---:|---|---:|---:|---:|\n"
             + ("\n".join(lines) or "| (none evaluated) | | | | | | |"))
    version = rows_digest(store.candidates(model_type).drop(columns=["registered_at"]))
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata={
        "registered_now": len(registered), "candidates": len(cands), "evaluated": len(evaluated),
        "report_id": report[0] if report else "", "evaluations": dg.MetadataValue.md(table)})


def register_succeeded(store: JobStore, paid: PaidFineTuningResource, model_type: str, log) -> list[str]:
    """Every succeeded, not yet registered job of the partition becomes a candidate."""
    names = []
    for row in store.jobs("status = 'succeeded' AND model_type = ?", [model_type]).to_dict("records"):
        tuner = paid.provider(row["provider"])
        status = JobStatus(row["provider"], row["job_id"], "succeeded", row["provider_state"] or "succeeded",
                           tuned_model=row["tuned_model"], base_model=row["base_model"])
        tuned = tuner.register(status)
        name = store.add_candidate(model_type, tuned, row["method"])
        store.upsert({"idempotency_key": row["idempotency_key"], "status": "registered"})
        log(f"registered {name} = {tuned.provider} {tuned.model_id}")
        names.append(name)
    return names


def _consumed_report(instance: dg.DagsterInstance, model_type: str) -> tuple[str, int, int] | None:
    """(report id, seed, task count) of the partition's latest performance_report
    materialization (the one lineage shows), or None before the first report."""
    found = materializations(instance, "performance_report", model_type)
    if not found:
        return None
    up = found[0]
    return str(up.get("report_id")), int(up.get("seed")), int(up.get("n_eval_tasks"))


def _append_report(duckdb_store: DuckDBStore, model_type: str, report_id: str, seed: int, rules_version: str,
                   domain, result) -> None:
    reports = PerformanceTracker().summarize(result.records, model_type, list(domain.skills))
    created = datetime.now(timezone.utc).isoformat()
    duckdb_store.append(HISTORY, pd.DataFrame(report_rows(reports, report_id=report_id, model_type=model_type,
                                                          created_at=created)).assign(seed=seed, rules_version=rules_version))
    duckdb_store.append(SKILLS, pd.DataFrame(per_skill_rows(reports, report_id=report_id, model_type=model_type,
                                                            created_at=created)))
    n = max(len(result.records), 1)
    duckdb_store.append(EVALUATIONS, pd.DataFrame([{
        "model_type": model_type, "report_id": report_id, "candidate": result.records[0].candidate if result.records else "",
        "input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
        "mean_input_tokens": result.input_tokens / n, "mean_output_tokens": result.output_tokens / n,
        "cost_usd": result.cost_usd, "cost_per_1k_output_tokens": result.cost_per_1k_output_tokens,
        "mean_latency_s": result.mean_latency_s, "calls": result.attempts, "created_at": created}]))


def paid_candidate_costs(duckdb_store: DuckDBStore, model_type: str) -> dict[str, dict[str, float]]:
    """Candidate → Candidate(...) keyword arguments (prices and mean tokens) for ``model_selection``."""
    if not duckdb_store.table_exists("paid_candidates"):
        return {}
    cands = duckdb_store.read("paid_candidates", model_type)
    evals = (duckdb_store.read(EVALUATIONS, model_type).sort_values("created_at").groupby("candidate").last()
             if duckdb_store.table_exists(EVALUATIONS) else pd.DataFrame())
    out = {}
    for c in cands.itertuples():
        e = evals.loc[c.candidate] if c.candidate in evals.index else None
        out[c.candidate] = {"input_per_1k": float(c.input_per_1k_usd), "output_per_1k": float(c.output_per_1k_usd),
                            "hosting_per_hour": float(c.hosting_per_hour_usd),
                            "mean_input_tokens": float(e.mean_input_tokens) if e is not None else 0.0,
                            "mean_output_tokens": float(e.mean_output_tokens) if e is not None else 0.0}
    return out
