"""The whole chain for one partition through Dagster, with real Pipes child processes and tiny
settings: every asset materializes, checkpoints are published with their metadata, the report
has pass rates for base, SRL and RLVR, and the checkpoint catalog points at complete checkpoints."""

import copy

import hashlib

import dagster as dg
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from resources.checkpoint_store import LocalCheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from resources.wandb_resource import WandbResource
from helpers.moto_s3 import s3_env  # noqa: F401  (fixture)
from srl_assets.definitions import all_assets, build_resources

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64}
GRPO = {"max_steps": 2, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 24, "save_steps": 1}
RUN_CONFIG = {"ops": {
    "task_examples": {"config": {"n_train": 8, "n_eval": 4, "seed": 3}},
    "base_model": {"config": {"tiny": TINY, "vocab_size": 300, "sft_steps": 3, "sft_trajectories": 8, "sft_batch_size": 4}},
    # A 3-step model writes no valid step yet (every reward is -1): keep every prompt here.
    "normalized_rewards": {"config": {"target_prompts": 4, "num_generations": 3, "max_completion_length": 16,
                                      "temperature": 1.0, "dynamic_sampling": False}},
    # the base SFT'd on all 8: none unseen; one of each pair of SRL's group is the expert's step
    "srl_checkpoint": {"config": {**GRPO, "step_rows": "all", "expert_samples": 1}},
    # The default algorithm (rft) in two rounds of one step; the two-process test runs grpo.
    "rlvr_checkpoint": {"config": {"n_tasks": 8, "n_validation_tasks": 3,
                                   "grpo": {**GRPO, "max_completion_length": 32, "eval_steps": 1},
                                   "rft": {"rounds": 2, "prompts_per_round": 3, "samples_per_prompt": 2,
                                           "max_new_tokens": 32, "min_score": 0.0, "sft_steps": 1,
                                           "batch_size": 2, "save_steps": 1}}},
    "performance_report": {"config": {"n_eval_tasks": 6, "max_new_tokens": 32, "seed": 5}},
}}


LAST_CHAIN: dict = {}


def _materialize_chain(tmp_path, partition_key, rlvr_algorithm=None, resources=None):
    """Every asset for one partition with tiny settings (with ``resources`` if given, else local ones
    in ``tmp_path``); returns (materialization metadata by asset name, the DuckDB store, the
    checkpoint store)."""
    store = DuckDBStore(database=str(tmp_path / "srl.duckdb"))
    checkpoints = LocalCheckpointStore(root=str(tmp_path / "checkpoints"))
    resources = {
        "duckdb_store": store, "rules_resource": RulesResource(), "teacher": TeacherResource(),
        "checkpoint_store": checkpoints, "training": TrainingResource(work_root=str(tmp_path / "work")),
        "wandb": WandbResource(mode="disabled", dir=str(tmp_path / "wandb")),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    } if resources is None else resources
    store, checkpoints = resources["duckdb_store"], resources["checkpoint_store"]
    with dg.instance_for_test() as instance:
        run_config = copy.deepcopy(RUN_CONFIG)
        if rlvr_algorithm:
            run_config["ops"]["rlvr_checkpoint"]["config"]["algorithm"] = rlvr_algorithm
        result = dg.materialize(all_assets, partition_key=partition_key, resources=resources, instance=instance,
                                run_config=run_config)
        assert result.success
        mats = {m.asset_key.path[-1]: m.materialization.metadata for m in result.get_asset_materialization_events()}
        # For the lineage assertions: Dagster's own record of each materialization, and the stale
        # status the UI would show for every asset of the partition afterwards.
        resolver = get_stale_status_resolver(instance, all_assets)
        LAST_CHAIN.update(tags={m.asset_key.path[-1]: m.materialization.tags
                                for m in result.get_asset_materialization_events()},
                          stale={a.key.path[-1]: resolver.get_status(a.key, partition_key) for a in all_assets},
                          checks={e.asset_check_key.name: e for e in result.get_asset_check_evaluations()})
    return mats, store, checkpoints


def test_whole_chain_for_one_partition(tmp_path, monkeypatch, s3_env):
    """As `make demo` runs it with SRL_CHECKPOINT_URI=s3://...: the code location's own resources
    (build_resources), every checkpoint published to S3 (moto on loopback) and read back from it by
    self-contained children."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("SRL_CHECKPOINT_URI", "s3://srl-checkpoints/demo")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("SRL_DUCKDB_PATH", raising=False)
    mats, store, checkpoints = _materialize_chain(tmp_path, "tree", resources=build_resources())
    assert all(meta["uri"].value.startswith("s3://srl-checkpoints/demo/")
               for meta in (mats["base_model"], mats["srl_checkpoint"], mats["rlvr_checkpoint"]))
    assert checkpoints.list_keys("jobs") == [] and not (tmp_path / "checkpoints").exists()
    assert set(mats) == {a.key.path[-1] for a in all_assets}
    for stage in ("base_model", "srl_checkpoint", "rlvr_checkpoint"):
        meta = mats[stage]
        assert {"uri", "size_bytes", "sha256", "steps", "final_mean_reward"} <= set(meta), stage
        assert len(meta["sha256"].value) == 64 and meta["size_bytes"].value > 0
    assert mats["srl_checkpoint"]["steps"].value == 2 and "reward_curve" in mats["rlvr_checkpoint"]
    # RLVR (rft) validated its start and both rounds, and published one of the trained rounds.
    assert mats["rlvr_checkpoint"]["algorithm"].value == "rft" and mats["rlvr_checkpoint"]["kept_samples"].value == 6
    assert "| round |" in mats["rlvr_checkpoint"]["rft_rounds"].value
    assert mats["rlvr_checkpoint"]["selected_step"].value in (1, 2)
    rows = [line for line in mats["rlvr_checkpoint"]["validation"].value.splitlines() if line[:3] in ("| 0", "| 1", "| 2")]
    assert len(rows) == 3
    report = mats["performance_report"]
    for stage in ("base", "srl", "rlvr"):
        assert 0.0 <= report[f"pass_rate_{stage}"].value <= 1.0
    assert "| candidate |" in report["table"].value and "data:image/png;base64," in report["plot"].value
    catalog = store.read("checkpoints", "tree")
    assert set(catalog.stage) == {"base", "srl", "rlvr"}
    assert all(checkpoints.is_complete(key) for key in catalog.key)
    history = store.read("performance_history", "tree")
    assert set(history.candidate) == {"base", "srl", "rlvr"} and (history.n == 6).all()
    assert not (tmp_path / "work" / "srl").exists() or not any((tmp_path / "work" / "srl").rglob("summary.json"))
    _assert_true_lineage(mats, LAST_CHAIN["tags"], LAST_CHAIN["stale"], history)
    # The report's 32-token budget (tiny, for speed) is shorter than every stored expert trajectory: its WARN
    # check says so, counted with the base checkpoint's tokenizer (fetched back from S3).
    budget = LAST_CHAIN["checks"]["generation_budget_fits_experts"]
    assert not budget.passed and budget.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in budget.metadata.items()}
    assert meta["generation_budget"] == 32 and meta["over_budget"] == meta["expert_trajectories"] > 0
    assert meta["longest_expert_trajectory"] > 32


def _assert_true_lineage(mats, tags, stale, history):
    """Each asset consumed the checkpoint (or rows) its upstream materialization published: the one
    Dagster recorded as its input (dagster/input_data_version = sha256 of the upstream data version)."""
    def consumed(asset, upstream):
        return mats[asset]["lineage"].value[upstream]

    for asset, upstream in (("normalized_rewards", "base_model"), ("srl_checkpoint", "base_model"),
                            ("rlvr_checkpoint", "srl_checkpoint"), ("performance_report", "rlvr_checkpoint")):
        published = mats[upstream]["sha256"].value
        assert tags[upstream]["dagster/data_version"] == published
        assert consumed(asset, upstream)["sha256"] == published == consumed(asset, upstream)["data_version"]
        assert tags[asset][f"dagster/input_data_version/{upstream}"] == hashlib.sha256(published.encode()).hexdigest()
    assert consumed("srl_checkpoint", "srl_steps")["rows_sha256"] == mats["srl_steps"]["rows_sha256"].value
    assert mats["performance_report"]["checkpoints"].value == {
        stage: {"key": mats[asset]["checkpoint_key"].value, "sha256": mats[asset]["sha256"].value}
        for stage, asset in (("base", "base_model"), ("srl", "srl_checkpoint"), ("rlvr", "rlvr_checkpoint"))}
    assert set(history.checkpoint_sha256) == {mats[a]["sha256"].value
                                              for a in ("base_model", "srl_checkpoint", "rlvr_checkpoint")}
    report_id = mats["performance_report"]["report_id"].value
    assert mats["weaknesses"]["report_id"].value == report_id == mats["model_selection"]["report_id"].value
    # Every asset has a content data version, and right after the chain nothing is stale.
    assert all("dagster/data_version" in t for t in tags.values())
    assert set(stale.values()) == {StaleStatus.FRESH}, stale


