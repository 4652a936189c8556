"""The ``recipe_comparison`` asset: which recipe works best for this model type, with lineage.

From one common start, SFT-only, RLVR-only, SRL-only and SRL->RLVR (``srl_assets.training.recipes``,
run in a training child), all evaluated with the start on the same fresh held-out tasks; the paired
statistics come from ``srl_assets.performance.recipe_stats``. Results are appended to the
``recipe_comparison_history`` and ``recipe_comparison_pairwise`` tables and logged to wandb; every
recipe's model is published through the checkpoint store (stage ``recipe-<name>``).
"""


import json
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.checkpoint_store import CheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from srl_assets.assets.lineage import lineage_metadata, read_table
from srl_assets.assets.training import ModelSourceConfig, TRAINING_RETRY
from srl_assets.assets.training_support import png_markdown, publish_checkpoint, run_child
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.config_models import config_from_dataclass
from srl_assets.domains import MODEL_TYPES
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.partitions import model_type_partitions
from srl_assets.performance.performance_tracker import EvalRecord
from srl_assets.performance.recipe_stats import beats, compare_recipes, comparison_plot, markdown_table
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, trim_lore
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.training.configs import RFTConfig, StepSRLConfig
from srl_assets.training.recipes import (COMPARISON_DEFAULTS, RECIPES, RFT_DEFAULTS, SRL_RECIPE_DEFAULTS,
                                        START_DEFAULTS, comparison_rows)
from srl_assets.training.stages import read_rows

HISTORY, PAIRWISE = "recipe_comparison_history", "recipe_comparison_pairwise"
LABELS = {"start": "start", "sft": "SFT-only", "rlvr": "RLVR-only", "srl": "SRL-only", "srl_rlvr": "SRL→RLVR"}


# SFT steps of the tiny default's start for the types where 800 leaves no room. Rule: 800 steps unless the
# start then passes fewer than 10% of the held-out tasks (a recipe cannot show an effect on a start that
# passes nothing, and RLVR keeps almost no samples from it); then 1600. Measured (200 tasks, make compare's
# draw), 800 -> 1600 steps: personality 0.015 -> 0.160, building 0.025 -> 0.375, animal 0.065 -> 0.180 (tree
# 0.115 -> 0.225 and sound 0.135 -> 0.245 stay at 800; facial 0.415, plant 0.365 at 800). docs/experiments.md,
# "A start per model type".
START_STEPS_BY_TYPE: dict[str, int] = {"personality": 1600, "building": 1600, "animal": 1600}

# SRL with the comparison's own defaults (srl_assets/training/recipes.py, SRL_RECIPE_DEFAULTS: why 'rft').
RecipeSRLConfig = config_from_dataclass(StepSRLConfig, "RecipeSRLConfig", defaults=SRL_RECIPE_DEFAULTS)

# RLVR's RFT with the comparison's own defaults (srl_assets/training/recipes.py, RFT_DEFAULTS: why 3e-4).
RecipeRFTConfig = config_from_dataclass(RFTConfig, "RecipeRFTConfig", defaults=RFT_DEFAULTS)


class StartConfig(ModelSourceConfig):
    sft_steps: int = Field(default=START_DEFAULTS["sft_steps"], description="SFT steps on the start's own "
                           "trajectories: enough to know the domain's language and the output format, far from "
                           "saturation (README, Recipe comparison, says how this was chosen).")
    sft_steps_by_type: dict[str, int] = Field(
        default_factory=lambda: dict(START_STEPS_BY_TYPE),
        description="SFT steps for the model types listed, overriding sft_steps for them (the tiny default's "
                    "measured per-type starts; {} = sft_steps for every type, as a pretrained start wants).")
    sft_lr: float = Field(default=START_DEFAULTS["sft_lr"], description="The start's SFT learning rate.")
    sft_batch_size: int = Field(default=START_DEFAULTS["sft_batch_size"], description="The start's SFT batch size.")

    def steps_for(self, model_type: str) -> int:
        """The start's SFT steps for ``model_type``; a clear error for a key that names no model type."""
        unknown = sorted(set(self.sft_steps_by_type) - set(MODEL_TYPES))
        if unknown:
            raise ValueError(f"recipe_comparison.start.sft_steps_by_type names unknown model types {unknown}; "
                             f"known: {list(MODEL_TYPES)}")
        field = "sft_steps_by_type" if model_type in self.sft_steps_by_type else "sft_steps"
        steps = self.sft_steps_by_type.get(model_type, self.sft_steps)
        if steps < 0:
            raise ValueError(f"recipe_comparison.start.{field} for {model_type} must be >= 0, got {steps}")
        return steps


class RecipeComparisonConfig(dg.Config):
    start_trajectories: int = Field(default=160, description="Trajectories the common start is fine-tuned on "
                                    "(never shown to the recipes).")
    expert_trajectories: int = Field(default=80, description="Verified expert trajectories every recipe that "
                                     "uses them gets (SFT-only: whole; SRL: their step instances).")
    budget_steps: int = Field(default=COMPARISON_DEFAULTS["budget_steps"], description="Optimizer steps per "
                              "recipe (the matched compute); SRL->RLVR splits them by srl_share.")
    srl_share: float = Field(default=COMPARISON_DEFAULTS["srl_share"],
                             description="Share of SRL->RLVR's steps spent on SRL.")
    sft_lr: float = Field(default=COMPARISON_DEFAULTS["sft_lr"], description="SFT-only learning rate.")
    sft_batch_size: int = Field(default=COMPARISON_DEFAULTS["sft_batch_size"],
                                description="SFT-only batch size (trajectories per step).")
    n_rl_tasks: int = Field(default=400, description="Fresh train-split tasks for RLVR (verifier only).")
    n_eval_tasks: int = Field(default=200, description="Fresh held-out tasks, the same for every recipe.")
    eval_seed: int = Field(default=4242, description="Seed of the held-out tasks.")
    rl_seed: int = Field(default=777, description="Seed of the RLVR tasks.")
    max_new_tokens: int = Field(default=TRAJECTORY_MAX_NEW_TOKENS, description="Evaluation length.")
    recipes: list[str] = Field(default_factory=lambda: list(RECIPES), description="Recipes to run.")
    seed: int = Field(default=COMPARISON_DEFAULTS["seed"], description=(
        "Seed of the start's initialisation, SFT's data order and SRL's and RFT's sampling; the tasks keep "
        "eval_seed and rl_seed. `make compare COMPARE_ARGS=\"--seeds 0 1 2\"` runs several and pools them."))
    start: StartConfig = Field(default_factory=StartConfig)
    srl: RecipeSRLConfig = Field(default_factory=RecipeSRLConfig, description="SRL on the expert steps (update 'rft' "
                                 "by default, 'grpo' for the paper's policy gradient; max_steps comes from the budget).")
    rlvr: RecipeRFTConfig = Field(default_factory=RecipeRFTConfig, description="RLVR's RFT, shared by "
                                  "RLVR-only and SRL->RLVR (sft_steps comes from the budget).")


def _records(path) -> list[EvalRecord]:
    return [EvalRecord(**{**r, "skills": tuple(r["skills"]), "failed_skills": tuple(r["failed_skills"])})
            for r in read_rows(path)]


def _md(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


@dg.asset(partitions_def=model_type_partitions, deps=["trajectories"], group_name="comparison", pool="gpu",
          kinds={"pytorch", "duckdb"}, retry_policy=TRAINING_RETRY, code_version="1",
          description="From one common start, SFT-only / RLVR-only / SRL-only / SRL→RLVR with the same expert "
                      "trajectories and optimizer steps, evaluated paired on the same fresh held-out tasks: "
                      "pass rates and mean scores with 95% intervals, per-skill rates, McNemar tests.")
def recipe_comparison(context: dg.AssetExecutionContext, config: RecipeComparisonConfig, duckdb_store: DuckDBStore,
                      rules_resource: RulesResource, checkpoint_store: CheckpointStore, training: TrainingResource,
                      wandb: WandbResource, pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    model_type = context.partition_key
    start_steps = config.start.steps_for(model_type)
    domain, rules = rules_resource.load(model_type)
    trajs, trajs_up = read_table(context, duckdb_store, "trajectories")
    trajs = trajs.sort_values("task_id")
    lore_k = training.policy_lore_k
    generator = DynamicExampleGenerator(domain, rules)
    rl_tasks = generator.generate(config.n_rl_tasks, "train", config.rl_seed)
    eval_tasks = generator.generate(config.n_eval_tasks, "eval", config.eval_seed)
    rows = comparison_rows(
        [{"task_id": r.task_id, "task_text": r.prompt, "lore": trim_lore(r.lore, lore_k), "trajectory": r.trajectory}
         for r in trajs.itertuples()],
        [p.text for p in rules.lore], config.start_trajectories, config.expert_trajectories,
        list(zip(rl_tasks, policy_prompts(rl_tasks, rules, lore_k), strict=True)),
        list(zip(eval_tasks, policy_prompts(eval_tasks, rules, lore_k), strict=True)), task_column)
    parent_only = ("n_rl_tasks", "n_eval_tasks", "eval_seed", "rl_seed", "start_trajectories",
                   "expert_trajectories", "max_new_tokens")
    child_config = {**config.model_dump(exclude={**dict.fromkeys(parent_only, True),
                                                 "start": {"sft_steps_by_type": True}}),
                    "evaluate": {"max_new_tokens": config.max_new_tokens}}
    child_config["start"]["sft_steps"] = start_steps  # this partition's, resolved above
    summary, child_meta, out_dir, work_dir = run_child(
        context, pipes_subprocess_client, training, wandb, "compare", rows, child_config,
        {"rules": rules.version, "trajectories": trajs_up.data_version}, rules_dir=rules_resource.rules_dir)
    order = summary["recipes"]
    comparison = compare_recipes(_records(out_dir / "records.jsonl"), order, seed=config.seed)

    comparison_id = context.run.run_id
    checkpoints: dict[str, dict[str, str]] = {}
    for name in order:
        folder = out_dir / "models" / name
        key, info = publish_checkpoint(context, checkpoint_store, duckdb_store, f"recipe-{name}", folder,
                                       {"log": []}, training)
        checkpoints[name] = {"key": key, "sha256": info.sha256}
    created = datetime.now(timezone.utc).isoformat()
    budget = {name: summary["candidates"][name] for name in order}
    history = comparison.summary.assign(
        comparison_id=comparison_id, model_type=model_type, created_at=created, rules_version=rules.version,
        steps=[int(budget[n].get("steps", 0)) for n in order],
        generated_tokens=[int(budget[n].get("generated_tokens", 0)) for n in order],
        train_seconds=[float(budget[n].get("seconds", 0.0)) for n in order],
        checkpoint_sha256=[checkpoints[n]["sha256"] for n in order],
        config=json.dumps(child_config, default=str))
    duckdb_store.append(HISTORY, history)
    duckdb_store.append(PAIRWISE, comparison.pairwise.assign(comparison_id=comparison_id, model_type=model_type,
                                                             created_at=created))
    plot = png_markdown(comparison_plot(comparison, work_dir / "recipes.png", f"Recipes from one start ({model_type})"),
                        f"Recipes ({model_type})")
    verdicts = {f"{a}_beats_{b}": beats(comparison, a, b) for a, b in
                (("srl", "start"), ("srl_rlvr", "rlvr"), ("srl_rlvr", "start"), ("rlvr", "start"), ("sft", "start"))
                if a in order and b in order}
    compute = pd.DataFrame([{"recipe": LABELS.get(n, n), "optimizer steps": int(budget[n].get("steps", 0)),
                             "generated tokens": int(budget[n].get("generated_tokens", 0)),
                             "train s": float(budget[n].get("seconds", 0.0)),
                             "eval s": float(budget[n].get("eval_seconds", 0.0))} for n in order])
    pairs = comparison.pairwise[comparison.pairwise.a < comparison.pairwise.b][
        ["a", "b", "pass_a", "pass_b", "a_only", "b_only", "delta", "mcnemar_p"]]
    _log_to_wandb(wandb, model_type, comparison_id, comparison.summary, verdicts)
    training.clean(work_dir)
    return dg.MaterializeResult(metadata={
        **child_meta, **lineage_metadata(trajs_up),
        "comparison_id": comparison_id,
        "results": dg.MetadataValue.md(markdown_table(comparison)),
        "pass_rate_plot": plot,
        "compute": dg.MetadataValue.md(
            f"Matched by optimizer steps ({summary['budget_steps']} per recipe; SRL→RLVR: "
            f"{summary['srl_share']:.0%} SRL). Generated tokens and seconds shown beside them.\n\n" + _md(compute, "{:.1f}")),
        "pairwise": dg.MetadataValue.md(_md(pairs)),
        "per_skill": dg.MetadataValue.md(_md(comparison.skills)),
        **{k: dg.MetadataValue.bool(v) for k, v in verdicts.items()},
        "expert_trajectories": summary["expert_trajectories"], "step_instances": summary["step_instances"],
        "start_trajectories": summary["start_trajectories"], "eval_tasks": summary["eval_tasks"],
        "checkpoints": dg.MetadataValue.json(checkpoints),
    })


def _log_to_wandb(wandb: WandbResource, model_type: str, comparison_id: str, summary: pd.DataFrame,
                  verdicts: dict[str, bool]) -> None:
    if wandb.mode == "disabled":
        return
    run = wandb.init(f"recipes-{model_type}-{comparison_id[:8]}", {"model_type": model_type,
                                                                 "comparison_id": comparison_id},
                     group="recipe_comparison")
    try:
        import wandb as wb

        run.log({"recipes": wb.Table(dataframe=summary), **{f"pass_rate/{r.recipe}": r.pass_rate
                                                           for r in summary.itertuples()}, **verdicts})
    finally:
        run.finish()
