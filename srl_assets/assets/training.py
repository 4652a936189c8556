"""Training assets: ``base_model`` -> ``normalized_rewards`` -> ``srl_checkpoint`` -> ``rlvr_checkpoint``.

Each runs as an op in the ``gpu`` pool; the work itself runs in a child process through Dagster
Pipes (``srl_assets.training.child``), and the finished model is published atomically through the
CheckpointStore resource.
"""


import random
import statistics
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.checkpoint_store import CheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from srl_assets.assets.lineage import lineage_metadata, read_table, table_result_version
from srl_assets.assets.training_support import (checkpoint_metadata, curve_plot, fetch_checkpoint, publish_checkpoint,
                                                reward_curve, run_child, upstream_checkpoint)
from srl_assets.config_models import config_from_dataclass
from srl_assets.assets.trajectories import tasks_from
from srl_assets.partitions import model_type_partitions
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, task_prompt, trim_lore
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.domains.base import Rules
from srl_assets.dynamic_example_generator import DynamicExampleGenerator, Task
from srl_assets.rlvr.rlvr_tasks import rlvr_tasks
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.training.configs import (SRL_DEFAULTS, DPOStageConfig, GRPOStageConfig, PPOConfig, RFTConfig,
                                        StepSRLConfig)
from srl_assets.training.stages import read_rows


# A retried op finds its intermediate checkpoints in the same work folder and resumes from them.
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=5)
# Each training asset's code version, raised when a change of its code or defaults changes what it makes from the
# same inputs, so the UI marks it (and what reads it) stale after an upgrade. srl_checkpoint 2: the rft SRL stage
# (2026-12-03); rlvr_checkpoint 2: rollouts of up to 384 tokens, not 320 (2026-12-04).
CODE_VERSIONS = {"base_model": "1", "normalized_rewards": "1", "srl_checkpoint": "2", "rlvr_checkpoint": "2"}


class ModelSourceConfig(dg.Config):
    """Where a starting model comes from: base_model's and the recipe comparison's start."""

    model_name_or_path: str | None = Field(default=None, description="Any Hugging Face causal LM (folder or "
                                           "hub name); empty = the tiny Llama built offline from the corpus.")
    vocab_size: int = Field(default=1024, description="BPE vocabulary of the tiny default.")
    tiny: dict[str, int] = Field(default_factory=lambda: {"hidden_size": 64, "num_hidden_layers": 2,
                                                           "intermediate_size": 128},
                                 description="TinyModelConfig overrides (the demo's 0.13M-parameter shape).")


class BaseModelConfig(ModelSourceConfig):
    sft_trajectories: int = Field(default=160, description="Expert trajectories in the warm-start slice.")
    sft_step_fraction: float = Field(default=0.0, description="Step instances (the evaluation prompt + the expert's "
                                     "steps 1..k-1 -> step k, SRL's format) added per slice trajectory; each is a "
                                     "prefix of a slice trajectory, so 0 loses nothing.")
    sft_steps: int = Field(default=1500, description="Warm-start SFT steps (0 = none). 1500: the end point of the "
                           "RL stages follows the base (RFT learns from the samples the base gets right), and from "
                           "1000 to 1600 steps the held-out pass rate rose from 0.115 to 0.17 (personality) and "
                           "0.225 to 0.36 (tree); docs/experiments.md.")
    sft_lr: float = Field(default=3e-3, description="Warm-start learning rate (~1e-5 for a pretrained model).")
    save_steps: int = Field(default=250, description="Intermediate SFT checkpoint interval (a retried op resumes).")
    sft_batch_size: int = Field(default=8, description="Warm-start batch size.")
    chat_template: Literal["auto", "on", "off"] = Field(default="auto", description="Prompt contract: render "
                                                        "prompts with the tokenizer's chat template (on) or as raw "
                                                        "text (off); auto = on for a pretrained model that has one, "
                                                        "off for the tiny default. Later stages inherit it.")
    seed: int = 0


class NormalizedRewardsConfig(dg.Config):
    target_prompts: int = Field(default=16, description="Informative step prompts to keep.")
    num_generations: int = Field(default=4, description="Rollouts per prompt.")
    max_completion_length: int = Field(default=160, description="Tokens a rollout may write before its line break "
                                       "(a final JSON spec is the longest step).")
    reward: str = Field(default="field", description="Registered step reward (srl_assets/srl/step_reward.py): "
                        "difflib | tokens | field; the same as srl_checkpoint's.")
    temperature: float = Field(default=0.7, description="Rollout sampling temperature (the paper uses 1.0; an "
                               "under-trained tiny model breaks the format on most samples at 1.0).")
    normalizer: str = Field(default="group", description="RewardNormalizer: group | batch | running | none.")
    dynamic_sampling: bool = Field(default=True, description="Drop and replace prompts whose rollouts all "
                                   "score alike (off: keep every prompt, e.g. for a smoke test).")
    dynamic_sampling_eps: float = Field(default=1e-3, description="Groups whose reward std <= eps are dropped.")
    seed: int = 0


# SRL_DEFAULTS (srl_assets/training/configs.py) says why each setting.
SRLStageConfig = config_from_dataclass(StepSRLConfig, "SRLStageConfig", defaults=SRL_DEFAULTS)
SRLConfig = config_from_dataclass(StepSRLConfig, "SRLConfig", defaults=SRL_DEFAULTS, extra={
    "step_rows": (Literal["unseen", "informative", "all"], Field(default="unseen", description=(
        "Which step instances SRL trains on: 'unseen' = those of the trajectories outside base_model's SFT "
        "slice (the expert steps the base has not been fine-tuned on), 'informative' = only the prompts "
        "normalized_rewards kept, 'all' = every trajectory's.")))})
_GRPOForRLVR = config_from_dataclass(GRPOStageConfig, "RLVRGRPOConfig", defaults={
    "max_steps": 24, "learning_rate": 3e-4, "warmup_ratio": 0.1, "beta": 0.05,
    "max_completion_length": TRAJECTORY_MAX_NEW_TOKENS, "prompts_per_step": 8, "num_generations": 8,
    "temperature": 0.7, "eval_steps": 8})
_PPOForRLVR = config_from_dataclass(PPOConfig, "RLVRPPOConfig", defaults={
    "num_steps": 8, "max_new_tokens": TRAJECTORY_MAX_NEW_TOKENS, "save_steps": 4})
_DPOForRLVR = config_from_dataclass(DPOStageConfig, "RLVRDPOConfig", defaults={
    "max_steps": 12, "max_new_tokens": TRAJECTORY_MAX_NEW_TOKENS})
# Two rounds of 800 tasks with 150 fine-tuning steps each, not RFTConfig's one round of 400 x 150: RLVR is the
# stage where the demo's compute pays most. From the seven bases of a clean-clone demo (da2bb55), 200 held-out tasks
# per type, the mean pass rate after one round of 800 tasks (the default until 2026-12-03) was 0.581, after two
# rounds of 500 x 100 steps 0.604, of 600 x 120 steps 0.615 and of 800 x 150 steps 0.628 (every type above one
# round), for about +12, +8 and +24 s per type (one round: 28 s). Two rounds of 800 took a cold-started demo past 20
# minutes; the warm-started training children (srl_assets/training/warm_start.py, ~23 s less per type) pay for
# them. Spending the time on the base instead does not pay: 1200 base SFT steps (not 1500) with two rounds of 800
# gave 0.589 (docs/experiments.md, session 21). The recipe comparison keeps one round of 400 (RFT_DEFAULTS), the
# setting its tables were measured with.
_RFTForRLVR = config_from_dataclass(RFTConfig, "RLVRRFTConfig", defaults={
    "rounds": 2, "prompts_per_round": 800, "sft_steps": 150})


class RLVRConfig(dg.Config):
    algorithm: Literal["grpo", "ppo", "dpo", "rft"] = Field(default="rft", description=(
        "RLVR algorithm: grpo (TRL GRPOTrainer), ppo (the project's own), dpo (TRL DPOTrainer on verifier-ranked "
        "pairs) or rft (rejection-sampling fine-tuning on the policy's verified samples). rft is the default: on "
        "the tiny CPU default it is the one that beats the base model in the demo's minutes (README, Results)."))
    n_tasks: int = Field(default=1600, description="Train-split tasks used as RLVR prompts: the stored task_examples, "
                         "topped up with fresh ones from the DynamicExampleGenerator (RLVR needs only the verifier). RFT needs "
                         "rounds x prompts_per_round of them (2 x 800 by default).")
    n_validation_tasks: int = Field(default=60, description="Fresh train-split tasks for best-checkpoint selection "
                                    "(GRPO's eval_steps); never the held-out eval split.")
    task_seed: int = Field(default=0, description="Seed of the fresh RLVR and validation tasks.")
    skill_weights: dict[str, float] = Field(default_factory=dict, description="Raise a skill's weight to draw "
                                            "more fresh RLVR (and RFT round) tasks exercising it; the weakness "
                                            "sensor sets the weak skills'. Never used for held-out evaluation.")
    start_from: str | None = Field(default=None, description="Checkpoint key in the store to start from instead "
                                   "of the SRL checkpoint (a weakness retraining: the one serving now).")
    grpo: _GRPOForRLVR = Field(default_factory=_GRPOForRLVR)
    ppo: _PPOForRLVR = Field(default_factory=_PPOForRLVR)
    dpo: _DPOForRLVR = Field(default_factory=_DPOForRLVR)
    rft: _RFTForRLVR = Field(default_factory=_RFTForRLVR)


def _base_rows(trajs: pd.DataFrame, steps: pd.DataFrame, rules, config: BaseModelConfig,
               lore_k: int) -> list[dict[str, Any]]:
    trajs = trajs.sort_values("task_id")
    corpus = [p.text for p in rules.lore] + list(trajs.trajectory) + list(trajs.prompt) + list(steps.prompt.head(200))
    rows: list[dict[str, Any]] = [{"kind": "corpus", "text": t} for t in corpus]
    slice_ids = set(trajs.task_id.head(config.sft_trajectories))
    for r in trajs[trajs.task_id.isin(slice_ids)].itertuples():
        rows.append({"kind": "sft", "prompt": task_prompt(r.prompt, trim_lore(r.lore, lore_k)), "completion": r.trajectory})
    step_rows = steps[steps.task_id.isin(slice_ids)].sample(frac=1.0, random_state=config.seed)
    for r in step_rows.head(int(len(slice_ids) * config.sft_step_fraction)).itertuples():
        rows.append({"kind": "sft", "prompt": r.prompt, "completion": r.target})
    return rows


@dg.asset(partitions_def=model_type_partitions, deps=["trajectories", "srl_steps"], group_name="training",
          pool="gpu", kinds={"pytorch"}, retry_policy=TRAINING_RETRY, code_version=CODE_VERSIONS["base_model"], description="The starting policy: a tiny Llama + BPE tokenizer "
          "built offline and warm-started by a short SFT, or any Hugging Face causal LM.")
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, duckdb_store: DuckDBStore,
               rules_resource: RulesResource, checkpoint_store: CheckpointStore, training: TrainingResource,
               wandb: WandbResource, pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    model_type = context.partition_key
    _, rules = rules_resource.load(model_type)
    trajs, trajs_up = read_table(context, duckdb_store, "trajectories")
    steps, steps_up = read_table(context, duckdb_store, "srl_steps")
    rows = _base_rows(trajs, steps, rules, config, training.policy_lore_k)
    child_config = {"model_name_or_path": config.model_name_or_path, "vocab_size": config.vocab_size,
                    "tiny": config.tiny, "sft_steps": config.sft_steps, "sft_lr": config.sft_lr,
                    "sft_batch_size": config.sft_batch_size, "seed": config.seed, "save_steps": config.save_steps,
                    "chat_template": config.chat_template}
    summary, child_meta, out_dir, work_dir = run_child(
        context, pipes_subprocess_client, training, wandb, "base", rows, child_config,
        {"rows": len(rows), "rules": rules.version})
    key, info = publish_checkpoint(context, checkpoint_store, duckdb_store, "base", out_dir, summary, training)
    loss = summary["sft"].get("final_loss")
    metadata = {**child_meta, **checkpoint_metadata(key, info, summary), **lineage_metadata(trajs_up, steps_up),
                "parameters": summary["parameters"], "sft_trajectories": len(set(trajs.task_id.head(config.sft_trajectories))),
                "source": summary["source"], "sft_examples": summary["sft_examples"],
                "final_mean_reward": float("nan"), "sft_final_loss": float(loss) if loss is not None else float("nan")}
    if summary["log"]:
        metadata["loss_curve"] = curve_plot(summary["log"], ["loss"], work_dir / "loss.png", f"SFT loss ({model_type})")
    training.clean(work_dir)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(info.sha256))


@dg.asset(partitions_def=model_type_partitions, deps=["base_model", "srl_steps"], group_name="training",
          pool="gpu", kinds={"pytorch", "duckdb"}, code_version=CODE_VERSIONS["normalized_rewards"], description="Rollouts of the base policy on step prompts, "
          "step rewards normalized by the RewardNormalizer; zero-variance prompts dropped and replaced.")
def normalized_rewards(context: dg.AssetExecutionContext, config: NormalizedRewardsConfig,
                       duckdb_store: DuckDBStore, checkpoint_store: CheckpointStore, training: TrainingResource,
                       wandb: WandbResource, pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    model_type = context.partition_key
    base, base_up = upstream_checkpoint(context, duckdb_store, "base_model", "base")
    steps, steps_up = read_table(context, duckdb_store, "srl_steps")
    pool = [{"task_id": r.task_id, "step_index": int(r.step_index), "prompt": r.prompt, "target": r.target}
            for r in steps.itertuples()]
    random.Random(config.seed).shuffle(pool)
    model_path = fetch_checkpoint(checkpoint_store, training, base)
    summary, _, out_dir, work_dir = run_child(context, pipes_subprocess_client, training, wandb, "rollouts", pool,
                                              config.model_dump(), {"base": base["sha256"]}, model_path=model_path)
    all_rows = read_rows(out_dir / "rollouts.jsonl")
    training.clean(work_dir)
    stats = summary["normalizer_stats"]
    kept = [r for r in all_rows if r["informative"] and r["rollout"] == 0]
    df = pd.DataFrame(all_rows).assign(model_type=model_type, base_sha256=base["sha256"])
    duckdb_store.replace_partition("normalized_rewards", model_type, df)
    version, version_meta = table_result_version(duckdb_store, "normalized_rewards", model_type)
    groups = df.groupby(["task_id", "step_index"])
    raw = df.raw_reward.tolist()
    hist = pd.cut(df.raw_reward, bins=[-1.01, -0.99, 0.2, 0.4, 0.6, 0.8, 1.0]).value_counts(sort=False)
    table = "\n".join(f"| {interval} | {count} |" for interval, count in hist.items())
    return dg.MaterializeResult(metadata={
        "prompts_rolled_out": groups.ngroups,
        "prompts_kept": len(kept),
        "prompts_dropped_zero_variance": groups.ngroups - len(kept),
        "rollouts": len(df),
        "raw_reward_mean": statistics.fmean(raw),
        "format_violation_rate": sum(r == -1.0 for r in raw) / len(raw),
        "normalizer": config.normalizer,
        "normalizer_stats": dg.MetadataValue.json(stats),
        "reward_distribution": dg.MetadataValue.md(f"| raw step reward | rollouts |\n|---|---|\n{table}"),
        "base_checkpoint": base["uri"],
        **version_meta, **lineage_metadata(base_up, steps_up),
    }, data_version=dg.DataVersion(version))


def srl_stage_rows(model_type: str, steps: pd.DataFrame, step_rows: str, sft_trajectories: int,
                   informative: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The SRL stage's input rows from the ``srl_steps`` table, as SRLConfig.step_rows selects them:
    ``sft_trajectories`` is the size of the base's SFT slice (the first trajectories by task id, as _base_rows
    takes them); ``informative`` ('informative' only) the step prompts normalized_rewards kept."""
    if step_rows == "informative":
        if informative is None:
            raise ValueError("srl_stage_rows: step_rows 'informative' needs normalized_rewards' informative rows")
        kept = informative[["task_id", "step_index"]].drop_duplicates().merge(steps, on=["task_id", "step_index"])
    elif step_rows == "unseen":
        kept = steps[~steps.task_id.isin(set(sorted(steps.task_id.unique())[:sft_trajectories]))]
    else:
        kept = steps
    if kept.empty:
        raise RuntimeError(f"{model_type}: no step instance to train SRL on (step_rows={step_rows!r}); "
                           "materialize more trajectories, lower base_model's sft_trajectories, or use 'all'")
    return [{"prompt": r.prompt, "target": r.target, "last": int(r.step_index) == int(r.n_steps)}
            for r in kept.itertuples()]


def rlvr_stage_rows(stored: list[Task], generator: DynamicExampleGenerator, rules: Rules, config: RLVRConfig,
                    lore_k: int) -> tuple[list[dict[str, Any]], list[Task], list[Task]]:
    """The RLVR stage's input rows (training and validation tasks, the policy's prompts), and the two task
    lists: the stored train tasks topped up with fresh ones, reproducible from ``config.task_seed``."""
    train_tasks, validation_tasks = rlvr_tasks(stored, generator, config.n_tasks, config.n_validation_tasks,
                                               config.task_seed)
    seen = {t.task_id for t in stored}  # tasks the warm start may have been fine-tuned on
    rows = [{"prompt": prompt, "task": task_column(t), "role": role, "fresh": t.task_id not in seen}
            for role, tasks in (("train", train_tasks), ("validation", validation_tasks))
            for t, prompt in zip(tasks, policy_prompts(tasks, rules, lore_k), strict=True)]
    return rows, train_tasks, validation_tasks


@dg.asset(partitions_def=model_type_partitions, deps=["normalized_rewards", "base_model", "srl_steps"], group_name="training",
          pool="gpu", kinds={"pytorch"}, retry_policy=TRAINING_RETRY, code_version=CODE_VERSIONS["srl_checkpoint"], description="SRL against the expert's next step, in the "
          "evaluation's prompt format: a likelihood step on the members the step reward accepts (update 'rft', the "
          "default) or the paper's step-wise GRPO (srl_assets/srl/step_grpo.py).")
def srl_checkpoint(context: dg.AssetExecutionContext, config: SRLConfig, duckdb_store: DuckDBStore,
                   checkpoint_store: CheckpointStore, training: TrainingResource, wandb: WandbResource,
                   pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    model_type = context.partition_key
    base, base_up = upstream_checkpoint(context, duckdb_store, "base_model", "base")
    rewards, rewards_up = read_table(context, duckdb_store, "normalized_rewards")
    rewards = rewards[rewards.informative.astype(bool)]
    steps, steps_up = read_table(context, duckdb_store, "srl_steps")
    rows = srl_stage_rows(model_type, steps, config.step_rows, int(base_up.get("sft_trajectories") or 0), rewards)
    stage_config = config.model_dump(exclude={"step_rows"})
    summary, child_meta, out_dir, work_dir = run_child(
        context, pipes_subprocess_client, training, wandb, "srl", rows, stage_config,
        {"base": base["sha256"], "rows": len(rows)}, model_path=fetch_checkpoint(checkpoint_store, training, base))
    key, info = publish_checkpoint(context, checkpoint_store, duckdb_store, "srl", out_dir, summary, training)
    metadata = {**child_meta, **checkpoint_metadata(key, info, summary),
                **lineage_metadata(base_up, rewards_up, steps_up), "prompts": len(rows),
                "step_rows": config.step_rows, "reward": config.reward,
                "generated_tokens": int(summary.get("generated_tokens", 0)),
                "final_kl_coef": float(summary.get("final_beta", 0.0)),
                "normalizer_stats": dg.MetadataValue.json(summary.get("normalizer_stats", {})),
                "reward_curve": reward_curve(summary, "raw_step_reward", work_dir, f"SRL step reward ({model_type})")}
    training.clean(work_dir)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(info.sha256))


@dg.asset(partitions_def=model_type_partitions, deps=["srl_checkpoint", "task_examples"], group_name="training",
          pool="gpu", kinds={"pytorch"}, retry_policy=TRAINING_RETRY, code_version=CODE_VERSIONS["rlvr_checkpoint"], description="RLVR from the SRL checkpoint: reward = the verifier's "
          "verdict on the final spec (RFT on the policy's own verified samples by default; GRPO, the project's PPO, "
          "or DPO on verifier-ranked pairs); RFT and GRPO publish the round or step that does best on validation tasks.")
def rlvr_checkpoint(context: dg.AssetExecutionContext, config: RLVRConfig, duckdb_store: DuckDBStore,
                    rules_resource: RulesResource, checkpoint_store: CheckpointStore, training: TrainingResource,
                    wandb: WandbResource, pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    model_type = context.partition_key
    srl, srl_up = upstream_checkpoint(context, duckdb_store, "srl_checkpoint", "srl")
    domain, rules = rules_resource.load(model_type)
    task_rows, tasks_up = read_table(context, duckdb_store, "task_examples")
    stored = tasks_from(task_rows, "train")
    if config.start_from:  # a weakness retraining continues from the checkpoint that serves now
        start = checkpoint_store.info(config.start_from)
        srl = {"key": config.start_from, "sha256": start.sha256, "uri": start.uri}
    generator = DynamicExampleGenerator(domain, rules, skill_weights=config.skill_weights)
    rows, train_tasks, validation_tasks = rlvr_stage_rows(stored, generator, rules, config, training.policy_lore_k)
    algo_config = {"algorithm": config.algorithm, **getattr(config, config.algorithm).model_dump()}
    summary, child_meta, out_dir, work_dir = run_child(
        context, pipes_subprocess_client, training, wandb, "rlvr", rows, algo_config,
        {"srl": srl["sha256"], "rows": len(rows)}, model_path=fetch_checkpoint(checkpoint_store, training, srl),
        rules_dir=rules_resource.rules_dir)
    key, info = publish_checkpoint(context, checkpoint_store, duckdb_store, "rlvr", out_dir, summary, training)
    metadata = {**child_meta, **checkpoint_metadata(key, info, summary), **lineage_metadata(srl_up, tasks_up),
                "algorithm": config.algorithm, "started_from": srl["uri"], "started_from_sha256": srl["sha256"],
                "skill_weights": dg.MetadataValue.json(config.skill_weights),
                "prompts": len(train_tasks), "validation_tasks": len(validation_tasks),
                "reward_curve": reward_curve(summary, "verifier_score", work_dir, f"RLVR verifier score ({model_type})")}
    if summary.get("rounds"):  # rft: what each round sampled and kept
        table = "\n".join(f"| {x['round']} | {x['tasks']} | {x['samples']} | {x['sample_pass_rate']:.3f} | "
                          f"{x['sample_score_mean']:.3f} | {x['kept']} | {x['final_loss']:.4f} |" for x in summary["rounds"])
        metadata["rft_rounds"] = dg.MetadataValue.md(
            "| round | tasks | samples | sample pass rate | sample mean score | kept (verified) | final SFT loss |\n"
            f"|---:|---:|---:|---:|---:|---:|---:|\n{table}")
        metadata["kept_samples"] = int(summary["kept"])
        metadata["loss_curve"] = curve_plot(summary["log"], ["loss"], work_dir / "loss.png",
                                            f"RFT fine-tuning loss ({model_type})")
    if summary.get("validation"):
        table = "\n".join(f"| {p['step']} | {p['pass_rate']:.3f} | {p['score']:.3f} |" for p in summary["validation"])
        metadata["selected_step"] = summary["selected_step"]
        metadata["validation"] = dg.MetadataValue.md(
            f"Greedy pass rate on {len(validation_tasks)} validation tasks; step 0 is the SRL start, "
            f"step {summary['selected_step']} is published.\n\n| step | pass rate | mean score |\n|---:|---:|---:|\n{table}")
    if summary.get("format_violation_rate") is not None:
        metadata["format_violation_rate"] = float(summary["format_violation_rate"])
    training.clean(work_dir)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(info.sha256))
