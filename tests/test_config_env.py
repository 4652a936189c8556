"""One place to configure a deployment: environment variables choose the checkpoint store, the
teacher, wandb, the DuckDB file and the policy's lore passages; secrets stay unresolved EnvVars."""

import dagster as dg
import pytest

from resources.checkpoint_store import LocalCheckpointStore, S3CheckpointStore, checkpoint_store_from_uri
from resources.teacher import TeacherResource
from resources.training import AWS_CHILD_ENV
from srl_assets.definitions import build_resources

VARS = ("SRL_CHECKPOINT_URI", "SRL_CHECKPOINT_ROOT", "SRL_DUCKDB_PATH", "SRL_POLICY_LORE_K", "SRL_TEACHER",
        "TEACHER_BASE_URL", "TEACHER_MODEL", "TEACHER_API_KEY", "TEACHER_TIMEOUT_S", "WANDB_MODE",
        "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "OPENAI_API_KEY")


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return monkeypatch


def test_defaults_are_the_embedded_setup(env, tmp_path):
    r = build_resources()
    assert isinstance(r["checkpoint_store"], LocalCheckpointStore) and r["checkpoint_store"].root == str(tmp_path / "checkpoints")
    assert r["duckdb_store"].database == str(tmp_path / "srl.duckdb")
    assert r["teacher"].kind == "procedural" and r["teacher"].api_key is None
    assert (r["wandb"].mode, r["wandb"].project, r["wandb"].entity, r["wandb"].api_key) == ("offline", "srl-platform", None, None)
    assert r["training"].policy_lore_k == 0 and r["training"].job_store_uri is None
    assert not set(AWS_CHILD_ENV) & set(r["pipes_subprocess_client"].inherit)


@pytest.mark.parametrize("variables, expected", [
    ({"SRL_CHECKPOINT_ROOT": "/data/ckpt"}, ("local", "/data/ckpt")),  # the older name still works
    ({"SRL_CHECKPOINT_URI": "/mnt/models"}, ("local", "/mnt/models")),
    ({"SRL_CHECKPOINT_URI": "file:///mnt/models"}, ("local", "/mnt/models")),
    ({"SRL_CHECKPOINT_URI": "s3://bucket/a/b", "SRL_CHECKPOINT_ROOT": "/ignored"}, ("s3", "bucket", "a/b")),
    ({"SRL_CHECKPOINT_URI": "s3://bucket"}, ("s3", "bucket", "")),
])
def test_checkpoint_store_from_the_environment(env, variables, expected):
    for name, value in variables.items():
        env.setenv(name, value)
    r = build_resources()
    store = r["checkpoint_store"]
    if expected[0] == "local":
        assert isinstance(store, LocalCheckpointStore) and store.root == expected[1]
        assert r["training"].job_store_uri is None
    else:
        assert isinstance(store, S3CheckpointStore) and (store.bucket, store.prefix) == expected[1:]
        # no credential, region or endpoint in the config: boto3 reads the AWS variables itself
        assert store.s3.aws_secret_access_key is None and store.s3.endpoint_url is None
        assert r["training"].job_store_uri == variables["SRL_CHECKPOINT_URI"]
        assert set(AWS_CHILD_ENV) <= set(r["pipes_subprocess_client"].inherit)


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3://", "https://host/x"])
def test_unsupported_checkpoint_uri_is_named(env, uri):
    env.setenv("SRL_CHECKPOINT_URI", uri)
    with pytest.raises(ValueError, match="SRL_CHECKPOINT_URI|checkpoint URI"):
        build_resources()
    with pytest.raises(ValueError, match="checkpoint URI"):
        checkpoint_store_from_uri(uri)


def test_openai_teacher_with_its_own_key_as_an_unresolved_env_var(env):
    env.setenv("SRL_TEACHER", "openai")
    env.setenv("TEACHER_BASE_URL", "http://127.0.0.1:9/v1")
    env.setenv("TEACHER_MODEL", "teacher-7b")
    env.setenv("TEACHER_TIMEOUT_S", "12.5")
    env.setenv("OPENAI_API_KEY", "sk-other-provider")
    teacher = build_resources()["teacher"]
    assert (teacher.kind, teacher.base_url, teacher.model, teacher.timeout_s) == ("openai", "http://127.0.0.1:9/v1",
                                                                                 "teacher-7b", 12.5)
    assert teacher.api_key is None  # no TEACHER_API_KEY: never another provider's key instead
    env.setenv("TEACHER_API_KEY", "sk-teacher-secret")
    teacher = build_resources()["teacher"]
    assert isinstance(teacher.api_key, dg.EnvVar) and teacher.api_key.env_var_name == "TEACHER_API_KEY"
    assert "sk-teacher-secret" not in repr(teacher)

    # Inside a run, Dagster resolves it: the teacher gets the value.
    @dg.asset
    def uses_teacher(teacher: TeacherResource) -> None:
        assert teacher.api_key == "sk-teacher-secret"

    assert dg.materialize([uses_teacher], resources={"teacher": teacher}).success


@pytest.mark.parametrize("variables, message", [
    ({"SRL_TEACHER": "openai", "TEACHER_MODEL": "m"}, "TEACHER_BASE_URL"),
    ({"SRL_TEACHER": "hf"}, "TEACHER_MODEL"),
    ({"SRL_TEACHER": "gpt"}, "SRL_TEACHER must be one of"),
    ({"TEACHER_TIMEOUT_S": "soon"}, "TEACHER_TIMEOUT_S"),
    ({"WANDB_MODE": "loud"}, "WANDB_MODE must be one of"),
    ({"SRL_POLICY_LORE_K": "two"}, "SRL_POLICY_LORE_K"),
])
def test_invalid_settings_name_the_variable(env, variables, message):
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        build_resources()


def test_hf_teacher_wandb_duckdb_and_lore(env, tmp_path):
    env.setenv("SRL_TEACHER", "hf")
    env.setenv("TEACHER_MODEL", "/models/teacher")
    env.setenv("WANDB_MODE", "online")
    env.setenv("WANDB_PROJECT", "game-content")
    env.setenv("WANDB_ENTITY", "studio")
    env.setenv("WANDB_API_KEY", "wandb-secret-value")
    env.setenv("SRL_DUCKDB_PATH", str(tmp_path / "tables.duckdb"))
    env.setenv("SRL_POLICY_LORE_K", "2")
    r = build_resources()
    assert (r["teacher"].kind, r["teacher"].model) == ("hf", "/models/teacher")
    wandb = r["wandb"]
    assert (wandb.mode, wandb.project, wandb.entity) == ("online", "game-content", "studio")
    assert isinstance(wandb.api_key, dg.EnvVar) and wandb.api_key.env_var_name == "WANDB_API_KEY"
    assert "wandb-secret-value" not in repr(wandb)
    assert r["duckdb_store"].database == str(tmp_path / "tables.duckdb") and r["training"].policy_lore_k == 2
