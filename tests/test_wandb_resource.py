"""WandbResource: the child-process environment, key hygiene, and an offline run without network."""

from __future__ import annotations

import os

import dagster as dg
import pydantic
import pytest

from resources.wandb_resource import WandbResource

KEY = "wandb-secret-key-0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "mode, api_key, expect_key",
    [
        ("offline", None, False),  # the default: no account needed
        ("offline", KEY, False),  # a key does not turn offline into online, nor travel to the child
        ("online", KEY, True),
        ("online", None, False),  # no key to pass (wandb may use ~/.netrc; init fails loudly if not)
        ("disabled", KEY, False),
    ],
)
def test_run_env(tmp_path, mode, api_key, expect_key):
    resource = WandbResource(project="p", mode=mode, api_key=api_key, dir=str(tmp_path / "wb"))
    env = resource.run_env()

    expected = {"WANDB_MODE": mode, "WANDB_PROJECT": "p", "WANDB_DIR": str(tmp_path / "wb")}
    if expect_key:
        expected["WANDB_API_KEY"] = KEY
    assert env == expected
    assert os.path.isabs(env["WANDB_DIR"]) and os.path.isdir(env["WANDB_DIR"])


def test_defaults_and_relative_dir_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = WandbResource().run_env()
    assert env == {
        "WANDB_MODE": "offline",
        "WANDB_PROJECT": "srl-platform",
        "WANDB_DIR": str(tmp_path / ".dagster_home" / "wandb"),
    }


def test_invalid_mode_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="wandb mode must be one of"):
        WandbResource(mode="shared")


def test_key_never_in_repr_or_str(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    for resource in (
        WandbResource(mode="online", api_key=KEY),
        WandbResource(mode="online", api_key=dg.EnvVar("WANDB_API_KEY")),
    ):
        for text in (repr(resource), str(resource), f"{resource}"):
            assert KEY not in text
            assert "<set>" in text  # but one can see that a key is configured


def test_env_var_key_resolves_inside_an_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    seen = {}

    @dg.asset
    def probe(wandb: WandbResource) -> None:
        seen.update(wandb.run_env())

    resource = WandbResource(mode="online", api_key=dg.EnvVar("WANDB_API_KEY"), dir=str(tmp_path / "wb"))
    assert dg.materialize([probe], resources={"wandb": resource}).success
    assert seen["WANDB_API_KEY"] == KEY


def test_offline_init_runs_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    resource = WandbResource(project="srl-test", dir=str(tmp_path / "wb"))

    run = resource.init("srl-personality-test", config={"lr": 5e-7, "model_type": "personality"}, group="srl")
    try:
        assert run.offline
        assert run.project == "srl-test"
        assert run.name == "srl-personality-test"
        assert run.group == "srl"
        assert run.config["lr"] == 5e-7
        run.log({"reward": 0.5})
    finally:
        run.finish()
    # the offline run's files are under the configured dir, ready for `wandb sync`
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))


def test_entity_reaches_the_child_only_when_set(tmp_path):
    assert "WANDB_ENTITY" not in WandbResource(dir=str(tmp_path)).run_env()
    env = WandbResource(dir=str(tmp_path), project="game-content", entity="studio").run_env()
    assert (env["WANDB_PROJECT"], env["WANDB_ENTITY"]) == ("game-content", "studio")
