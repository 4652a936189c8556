"""The ``recipe_comparison`` asset through Dagster with a real Pipes child and tiny settings: the five
candidates are evaluated on the same tasks, the paired results reach the history tables, the
metadata tells the story (table, plot, compute, pairwise tests, per-skill rates), and every recipe's
model is published and catalogued."""

import json

import dagster as dg
import pytest

from resources.checkpoint_store import LocalCheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from srl_assets.assets.recipes import HISTORY, PAIRWISE, recipe_comparison
from srl_assets.assets.training import RLVRConfig
from srl_assets.definitions import data_assets, defs
from srl_assets.training.recipes import RFT_DEFAULTS

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64}
COMPARE = {"start_trajectories": 3, "expert_trajectories": 3, "budget_steps": 2, "n_rl_tasks": 2,
           "n_eval_tasks": 4, "max_new_tokens": 16, "sft_batch_size": 2,
           "start": {"tiny": TINY, "vocab_size": 300, "sft_steps": 2, "sft_batch_size": 2},
           "srl": {"prompts_per_step": 2, "num_generations": 2, "expert_samples": 1, "max_completion_length": 12,
                   "save_steps": 0},
           "rlvr": {"prompts_per_round": 2, "samples_per_prompt": 2, "max_new_tokens": 16, "min_score": 0.0,
                    "batch_size": 2}}


def _resources(tmp_path):
    return {"duckdb_store": DuckDBStore(database=str(tmp_path / "srl.duckdb")), "rules_resource": RulesResource(),
            "teacher": TeacherResource(), "checkpoint_store": LocalCheckpointStore(root=str(tmp_path / "ckpt")),
            "training": TrainingResource(work_root=str(tmp_path / "work")),
            "wandb": WandbResource(mode="disabled", dir=str(tmp_path / "wandb")),
            "pipes_subprocess_client": dg.PipesSubprocessClient()}


def _run(tmp_path, compare_config, n_train=8):
    resources = _resources(tmp_path)
    run_config = {"ops": {"task_examples": {"config": {"n_train": n_train, "n_eval": 2, "seed": 3}},
                          "recipe_comparison": {"config": compare_config}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize([*data_assets, recipe_comparison], partition_key="plant", resources=resources,
                                instance=instance, run_config=run_config, raise_on_error=False)
    return result, resources


def _root_error(result) -> str:
    """The message of the innermost cause of the run's first step failure."""
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    return error.message


def test_recipe_comparison_reports_paired_results_and_publishes_every_model(tmp_path):
    # plant's own start length overrides sft_steps (2); another type's entry does not touch plant's
    start = {**COMPARE["start"], "sft_steps_by_type": {"plant": 3, "tree": 1}}
    result, resources = _run(tmp_path, {**COMPARE, "start": start})
    assert result.success
    meta = {m.asset_key.path[-1]: m.materialization.metadata for m in result.get_asset_materialization_events()}
    md = meta["recipe_comparison"]
    assert md["results"].value.startswith("| recipe | pass rate [95% CI] | mean score [95% CI] | Δ vs start |")
    assert md["pass_rate_plot"].value.startswith("![Recipes (plant)](data:image/png;base64,")
    assert "Matched by optimizer steps (2 per recipe; SRL→RLVR: 50% SRL)" in md["compute"].value
    for verdict in ("srl_beats_start", "srl_rlvr_beats_rlvr"):
        assert isinstance(md[verdict].value, bool)
    assert md["expert_trajectories"].value == 3 and md["start_trajectories"].value == 3
    assert md["eval_tasks"].value == 4
    assert md["lineage"].value["trajectories"]["data_version"]  # the trajectories it read, by content

    store: DuckDBStore = resources["duckdb_store"]
    history = store.read(HISTORY, "plant")
    assert sorted(history.recipe) == sorted(["start", "sft", "rlvr", "srl", "srl_rlvr"])
    assert history.comparison_id.nunique() == 1 and set(history.n_tasks) == {4}
    # the comparison's own RLVR defaults (COMPARE sets neither) reached the child, not the RLVR stage's
    child_rlvr = json.loads(history.config.iloc[0])["rlvr"]
    stage_rlvr = RLVRConfig().rft
    for name in ("learning_rate", "empty_round"):
        assert child_rlvr[name] == RFT_DEFAULTS[name] != getattr(stage_rlvr, name)
    steps = history.set_index("recipe").steps.to_dict()
    assert steps["start"] == 3 and steps["sft"] == 2 and steps["srl"] == 2
    assert steps["srl_rlvr"] <= 2 and steps["rlvr"] <= 2  # RFT: at most the budget (fewer when little is kept)
    pairwise = store.read(PAIRWISE, "plant")
    assert len(pairwise) == 5 * 4  # every ordered pair

    catalog = store.read("checkpoints", "plant")
    published = dict(zip(catalog.stage, catalog.sha256))
    assert set(published) == {f"recipe-{n}" for n in ("start", "sft", "rlvr", "srl", "srl_rlvr")}
    assert md["checkpoints"].value["srl"]["sha256"] == published["recipe-srl"]
    store_ = resources["checkpoint_store"]
    assert store_.info(md["checkpoints"].value["srl_rlvr"]["key"]).sha256 == published["recipe-srl_rlvr"]


def test_too_few_trajectories_fail_with_the_counts(tmp_path):
    result, _ = _run(tmp_path, {**COMPARE, "start_trajectories": 5, "expert_trajectories": 5}, n_train=6)
    assert not result.success
    assert "needs 5 start + 5 expert trajectories = 10, but only" in _root_error(result)


def test_start_steps_by_type_names_a_model_type_or_fails_before_training(tmp_path):
    start = {**COMPARE["start"], "sft_steps_by_type": {"plantt": 3}}
    result, resources = _run(tmp_path, {**COMPARE, "start": start})
    assert not result.success
    assert "sft_steps_by_type names unknown model types ['plantt']" in _root_error(result)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("spec.json"))  # no child ran


def test_start_steps_per_type_override_only_the_types_listed():
    from srl_assets.assets.recipes import START_STEPS_BY_TYPE, StartConfig

    config = StartConfig(sft_steps=800, sft_steps_by_type={"personality": 1600})
    assert config.steps_for("personality") == 1600 and config.steps_for("plant") == 800
    assert StartConfig(sft_steps=100, sft_steps_by_type={}).steps_for("personality") == 100
    assert StartConfig().sft_steps_by_type == START_STEPS_BY_TYPE  # the tiny default's measured starts
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        StartConfig(sft_steps_by_type={"plant": -1}).steps_for("plant")


def test_compare_job_selects_the_data_it_needs():
    job = defs.resolve_job_def("compare_recipes")
    keys = {k.path[-1] for k in job.asset_layer.executable_asset_keys}
    assert {"rules", "task_examples", "trajectories", "recipe_comparison"} <= keys
    assert "base_model" not in keys and "rlvr_checkpoint" not in keys


def test_the_comparisons_srl_is_the_pipeline_stages():
    """make compare's SRL and the pipeline's SRL stage are one setting: update 'rft' on 48 step instances x 4
    members at 3e-4 (docs/experiments.md, "Three times the expert steps per SRL step" and "An SRL stage that
    shows its effect"); the comparison's budget sets its steps, the stage runs 60."""
    from srl_assets.assets.recipes import RecipeComparisonConfig
    from srl_assets.assets.training import SRLConfig, SRLStageConfig

    compare, stage = RecipeComparisonConfig().srl.model_dump(), SRLStageConfig().model_dump()
    assert compare == stage
    assert {k: v for k, v in SRLConfig().model_dump().items() if k != "step_rows"} == stage
    assert (stage["update"], stage["prompts_per_step"], stage["num_generations"], stage["expert_samples"],
            stage["learning_rate"], stage["max_steps"]) == ("rft", 48, 4, 2, 3e-4, 60)
