"""Every run-config preset in configs/ is valid for the main job, so a typo fails here, not hours into a run."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from srl_assets.definitions import defs
from srl_assets.domains import MODEL_TYPES

PRESETS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def _run_config(preset: Path) -> dict:
    return yaml.safe_load(preset.read_text()) or {}


@pytest.fixture(scope="module")
def job():
    return defs.resolve_job_def("srl_pipeline")


def _job_for(preset: Path):
    """compare_*.yaml presets configure the recipe comparison's job; the others srl_pipeline."""
    return defs.resolve_job_def("compare_recipes" if preset.name.startswith("compare_") else "srl_pipeline")


def test_there_are_presets():
    assert {p.name for p in PRESETS} >= {"demo.yaml", "demo_rlvr100.yaml", "cpu_long.yaml", "gpu_qwen.yaml"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_is_valid_run_config(preset):
    dg.validate_run_config(_job_for(preset), _run_config(preset))


def test_a_misspelt_field_is_refused(job):
    bad = {"ops": {"rlvr_checkpoint": {"config": {"grpo": {"micro_batchsize": 8}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="micro_batchsize"):
        dg.validate_run_config(job, bad)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_passes_the_trainers_own_checks(preset):
    """The schema says nothing of e.g. micro_batch_size dividing the rollouts: the trainers' configs do."""
    from srl_assets.assets.recipes import RecipeComparisonConfig
    from srl_assets.assets.training import RLVRConfig, SRLConfig
    from srl_assets.training.configs import GRPOStageConfig, RFTConfig, StepSRLConfig

    ops = _run_config(preset).get("ops", {})
    srl = SRLConfig(**ops.get("srl_checkpoint", {}).get("config", {}))
    rlvr = RLVRConfig(**ops.get("rlvr_checkpoint", {}).get("config", {}))
    StepSRLConfig.from_dict(srl.model_dump(exclude={"step_rows"}))
    GRPOStageConfig.from_dict(rlvr.grpo.model_dump())
    RFTConfig(**rlvr.rft.model_dump())
    compare = RecipeComparisonConfig(**ops.get("recipe_comparison", {}).get("config", {}))
    StepSRLConfig.from_dict(compare.srl.model_dump())
    RFTConfig(**compare.rlvr.model_dump())
    for model_type in MODEL_TYPES:  # every type's start length resolves (a misspelt type fails here)
        compare.start.steps_for(model_type)


def test_gpu_compare_preset_starts_every_type_the_same():
    """The tiny default's per-type start lengths are not meant for a pretrained model: the GPU preset clears them."""
    from srl_assets.assets.recipes import RecipeComparisonConfig

    ops = _run_config(Path(__file__).parent.parent / "configs" / "compare_gpu_qwen.yaml")["ops"]
    compare = RecipeComparisonConfig(**ops["recipe_comparison"]["config"])
    assert {compare.start.steps_for(t) for t in MODEL_TYPES} == {compare.start.sft_steps}


def test_gpu_qwen_renders_prompts_through_the_chat_template():
    """The prompt contract of a real instruct model is on; the preset holds the string, not YAML's `on` = true."""
    from srl_assets.prompt_contract import parse_setting

    base = _run_config(Path(__file__).parent.parent / "configs" / "gpu_qwen.yaml")["ops"]["base_model"]["config"]
    assert parse_setting(base["chat_template"]) == "on"


@pytest.mark.parametrize("value", [True, "maybe"])  # True: what a bare `chat_template: on` parses to
def test_a_bad_chat_template_setting_is_refused(job, value):
    with pytest.raises(dg.DagsterInvalidConfigError, match="chat_template"):
        dg.validate_run_config(job, {"ops": {"base_model": {"config": {"chat_template": value}}}})
