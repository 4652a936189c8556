"""Every run-config preset in configs/ is valid for the main job, so a typo fails here, not hours into a run."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from srl_assets.definitions import defs

PRESETS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def _run_config(preset: Path) -> dict:
    return yaml.safe_load(preset.read_text()) or {}


@pytest.fixture(scope="module")
def job():
    return defs.resolve_job_def("srl_pipeline")


def test_there_are_presets():
    assert {p.name for p in PRESETS} >= {"demo.yaml", "demo_rlvr100.yaml", "cpu_long.yaml", "gpu_qwen.yaml"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_is_valid_run_config(job, preset):
    dg.validate_run_config(job, _run_config(preset))


def test_a_misspelt_field_is_refused(job):
    bad = {"ops": {"rlvr_checkpoint": {"config": {"grpo": {"micro_batchsize": 8}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="micro_batchsize"):
        dg.validate_run_config(job, bad)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_passes_the_trainers_own_checks(preset):
    """The schema says nothing of e.g. micro_batch_size dividing the rollouts: the trainers' configs do."""
    from srl_assets.assets.training import RLVRConfig, SRLConfig
    from srl_assets.training.configs import GRPOStageConfig, RFTConfig

    ops = _run_config(preset).get("ops", {})
    srl = SRLConfig(**ops.get("srl_checkpoint", {}).get("config", {}))
    rlvr = RLVRConfig(**ops.get("rlvr_checkpoint", {}).get("config", {}))
    GRPOStageConfig.from_dict(srl.model_dump())
    GRPOStageConfig.from_dict(rlvr.grpo.model_dump())
    RFTConfig(**rlvr.rft.model_dump())
