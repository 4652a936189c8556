"""Checkpoint store: atomic publish, verified fetch, local folder and S3 over real HTTP (moto server)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import boto3
import pytest
from dagster_aws.s3 import S3Resource
from moto.server import ThreadedMotoServer

from resources import checkpoint_store as cs
from resources.checkpoint_store import (
    MANIFEST_NAME,
    CheckpointIncompleteError,
    CheckpointInfo,
    CheckpointIntegrityError,
    LocalCheckpointStore,
    ManifestEntry,
    S3CheckpointStore,
)

BINARY = bytes(range(256)) * 8 + b"\x00\xff\x00"  # a small "safetensors" with every byte value


def make_checkpoint(folder: Path, *, weights: bytes = BINARY, extra: dict[str, str] | None = None) -> Path:
    """A fake ``save_pretrained`` folder: config, weights, tokenizer files, metrics, a sub-folder."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "training_config.json").write_text(json.dumps({"lr": 5e-7}))
    (folder / "extra").mkdir()
    (folder / "extra" / "metrics.json").write_text(json.dumps({"reward": 0.5}))
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file, manifest excluded."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, ok",
    [
        ("rlvr/personality/0b7c-41ab", True),  # a run id
        ("srl/facial/latest", True),
        ("base", True),  # a single segment
        ("", False),  # empty
        ("/srl/facial", False),  # absolute
        ("srl//facial", False),  # empty segment
        ("srl/../etc", False),  # traversal
        ("srl/.hidden", False),  # hidden names are reserved for temporary folders
        ("srl/facial/", False),  # trailing slash
        ("srl/fa cial", False),  # whitespace
        (f"srl/{MANIFEST_NAME}", False),  # the manifest name
    ],
)
def test_validate_key(key, ok):
    if ok:
        assert cs.validate_key(key) == key
    else:
        with pytest.raises(ValueError, match="invalid checkpoint key"):
            cs.validate_key(key)


def test_manifest_digest_is_order_independent_and_matches_sha256sum_format():
    a = ManifestEntry(path="a.json", size=1, sha256="1" * 64)
    b = ManifestEntry(path="b/c.bin", size=2, sha256="2" * 64)
    expected = hashlib.sha256(f"{'1' * 64}  a.json\n{'2' * 64}  b/c.bin\n".encode()).hexdigest()
    assert cs.manifest_digest([a, b]) == cs.manifest_digest([b, a]) == expected


def test_parse_manifest_rejects_edited_or_unsafe_manifests(tmp_path):
    entries = cs.scan_checkpoint_dir(make_checkpoint(tmp_path / "ckpt"))
    good = cs.build_manifest(entries, "k")
    assert cs.parse_manifest(json.dumps(good)) == entries

    edited = json.loads(json.dumps(good))
    edited["files"][0]["sha256"] = "0" * 64  # an entry changed without updating the digest
    traversal = json.loads(json.dumps(good))
    traversal["files"][0]["path"] = "../evil"
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({**good, "format": 99}), "format"),
        (json.dumps({**good, "files": []}), "no files"),
        (json.dumps(edited), "sha256 does not match"),
        (json.dumps({**good, "size_bytes": 1}), "size_bytes"),
        (json.dumps(traversal), "unsafe"),
    ]
    for raw, message in cases:
        with pytest.raises(ValueError, match=message):
            cs.parse_manifest(raw)


# ---------------------------------------------------------------------------------------------
# Local folder
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def local_store(tmp_path) -> LocalCheckpointStore:
    return LocalCheckpointStore(root=str(tmp_path / "store"))


def test_local_round_trip(tmp_path, local_store):
    src = make_checkpoint(tmp_path / "src")
    info = local_store.publish(str(src), "rlvr/personality/run-1")

    assert isinstance(info, CheckpointInfo)
    assert info.files == 6
    assert info.size_bytes == sum(len(b) for b in tree(src).values())
    assert info.uri == (tmp_path / "store" / "rlvr/personality/run-1").absolute().as_uri()
    assert info.uri.startswith("file://") and info.uri == local_store.uri("rlvr/personality/run-1")
    assert local_store.is_complete("rlvr/personality/run-1")
    assert local_store.info("rlvr/personality/run-1") == info

    out = local_store.fetch("rlvr/personality/run-1", str(tmp_path / "out"))
    assert out == str((tmp_path / "out").absolute())
    assert tree(Path(out)) == tree(src)
    assert cs.parse_manifest((Path(out) / MANIFEST_NAME).read_bytes()) == cs.scan_checkpoint_dir(src)


def test_local_sha256_is_stable_and_content_addressed(tmp_path, local_store):
    src = make_checkpoint(tmp_path / "src")
    first = local_store.publish(str(src), "srl/facial/a")
    again = local_store.publish(str(src), "srl/facial/b")  # same content, other key, later time
    assert first.sha256 == again.sha256
    assert first.sha256 == cs.manifest_digest(cs.scan_checkpoint_dir(src))

    changed = make_checkpoint(tmp_path / "src2", weights=BINARY[:-1] + b"\x01")
    assert local_store.publish(str(changed), "srl/facial/c").sha256 != first.sha256


def test_local_republish_of_a_fetched_folder_ignores_its_manifest(tmp_path, local_store):
    info = local_store.publish(str(make_checkpoint(tmp_path / "src")), "rlvr/plant/run-9")
    fetched = local_store.fetch("rlvr/plant/run-9", str(tmp_path / "fetched"))
    promoted = local_store.publish(fetched, "rlvr/plant/latest")  # promote a run to "latest"
    assert promoted.sha256 == info.sha256 and promoted.files == info.files


def test_local_replace_existing_key(tmp_path, local_store):
    old = make_checkpoint(tmp_path / "old", extra={"only_in_old.txt": "x"})
    new = make_checkpoint(tmp_path / "new", weights=b"new weights")
    local_store.publish(str(old), "srl/tree/latest")
    info = local_store.publish(str(new), "srl/tree/latest")

    assert local_store.info("srl/tree/latest") == info
    out = Path(local_store.fetch("srl/tree/latest", str(tmp_path / "out")))
    assert tree(out) == tree(new)  # the old-only file is gone, not mixed in
    # no temporary or replaced folders are left beside the checkpoint
    assert sorted(p.name for p in (tmp_path / "store" / "srl" / "tree").iterdir()) == ["latest"]
    assert local_store.list_keys() == ["srl/tree/latest"]


def _failing_final_rename(monkeypatch):
    """Make ``os.replace`` fail only when a staged (".publishing-") folder is moved into place."""
    real_replace = os.replace

    def replace(src, dst):
        if ".publishing-" in os.fspath(src):
            raise OSError("simulated crash during the final rename")
        return real_replace(src, dst)

    monkeypatch.setattr(cs.os, "replace", replace)


def test_local_interrupted_publish_leaves_nothing_complete(tmp_path, local_store, monkeypatch):
    src = make_checkpoint(tmp_path / "src")
    _failing_final_rename(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        local_store.publish(str(src), "rlvr/sound/run-2")

    assert not local_store.is_complete("rlvr/sound/run-2")
    assert local_store.list_keys() == []
    assert local_store.list_keys("rlvr") == []
    with pytest.raises(CheckpointIncompleteError, match="'rlvr/sound/run-2'.*no _COMPLETE.json"):
        local_store.fetch("rlvr/sound/run-2", str(tmp_path / "out"))
    # the staging folder was cleaned up
    assert list((tmp_path / "store" / "rlvr" / "sound").iterdir()) == []


def test_local_interrupted_replace_keeps_the_old_version(tmp_path, local_store, monkeypatch):
    old = make_checkpoint(tmp_path / "old")
    old_info = local_store.publish(str(old), "rlvr/animal/latest")
    _failing_final_rename(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        local_store.publish(str(make_checkpoint(tmp_path / "new", weights=b"new")), "rlvr/animal/latest")
    monkeypatch.undo()

    assert local_store.info("rlvr/animal/latest") == old_info
    assert local_store.list_keys() == ["rlvr/animal/latest"]
    assert tree(Path(local_store.fetch("rlvr/animal/latest", str(tmp_path / "out")))) == tree(old)


def test_local_staged_folder_with_manifest_is_never_listed(tmp_path, local_store):
    # a crash after the manifest was written but before the rename leaves a hidden complete-looking folder
    local_store.publish(str(make_checkpoint(tmp_path / "src")), "srl/plant/latest")
    stray = tmp_path / "store" / "srl" / "plant" / ".latest.publishing-deadbeef"
    os.rename(tmp_path / "store" / "srl" / "plant" / "latest", stray)
    assert local_store.list_keys() == []
    assert not local_store.is_complete("srl/plant/latest")


def test_local_tampered_file_same_size_fails_fetch_naming_the_file(tmp_path, local_store):
    local_store.publish(str(make_checkpoint(tmp_path / "src")), "rlvr/building/run-3")
    weights = tmp_path / "store" / "rlvr/building/run-3" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF  # same size, different content: only a hash check can see it
    weights.write_bytes(bytes(data))

    with pytest.raises(CheckpointIntegrityError, match=r"'rlvr/building/run-3'.*'model\.safetensors'.*corrupt"):
        local_store.fetch("rlvr/building/run-3", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # no partial copy left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda d: (d / "tokenizer.json").write_text("{}"), r"'tokenizer\.json' has 2 bytes"),
        (lambda d: (d / "config.json").unlink(), r"'config\.json' is listed in the manifest but missing"),
        (lambda d: (d / "sneaky.py").write_text("x"), r"'sneaky\.py' is stored but not listed"),
        (lambda d: (d / MANIFEST_NAME).write_text("{"), r"invalid _COMPLETE.json"),
        (lambda d: (d / MANIFEST_NAME).unlink(), r"no _COMPLETE.json"),
    ],
)
def test_local_files_not_matching_the_manifest_are_incomplete(tmp_path, local_store, tamper, reason):
    local_store.publish(str(make_checkpoint(tmp_path / "src")), "srl/sound/latest")
    tamper(tmp_path / "store" / "srl/sound/latest")

    assert not local_store.is_complete("srl/sound/latest")
    assert local_store.list_keys() == []
    with pytest.raises(CheckpointIncompleteError, match=r"'srl/sound/latest'.*" + reason):
        local_store.fetch("srl/sound/latest", str(tmp_path / "out"))


def test_local_list_keys_prefix_nesting_and_delete(tmp_path, local_store):
    src = str(make_checkpoint(tmp_path / "src"))
    for key in ["srl/facial/latest", "srl/facial2/latest", "rlvr/facial/r1", "rlvr/facial/r2"]:
        local_store.publish(src, key)

    assert local_store.list_keys() == ["rlvr/facial/r1", "rlvr/facial/r2", "srl/facial/latest", "srl/facial2/latest"]
    assert local_store.list_keys("srl/facial") == ["srl/facial/latest"]  # whole segments, not "facial2"
    assert local_store.list_keys("rlvr/facial/") == ["rlvr/facial/r1", "rlvr/facial/r2"]
    assert local_store.list_keys("nothing") == []

    with pytest.raises(ValueError, match="may not nest"):
        local_store.publish(src, "rlvr/facial/r1/inner")
    with pytest.raises(ValueError, match="lives under it"):
        local_store.publish(src, "rlvr")

    local_store.delete("rlvr/facial/r1")
    local_store.delete("rlvr/facial/r1")  # idempotent
    assert local_store.list_keys("rlvr") == ["rlvr/facial/r2"]
    assert not local_store.is_complete("rlvr/facial/r1")


def test_fetch_refuses_a_non_empty_destination(tmp_path, local_store):
    local_store.publish(str(make_checkpoint(tmp_path / "src")), "srl/tree/latest")
    (tmp_path / "empty").mkdir()
    assert tree(Path(local_store.fetch("srl/tree/latest", str(tmp_path / "empty")))) == tree(tmp_path / "src")
    with pytest.raises(FileExistsError):
        local_store.fetch("srl/tree/latest", str(tmp_path / "empty"))


def test_publish_rejects_empty_or_missing_source(tmp_path, local_store):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        local_store.publish(str(tmp_path / "empty"), "srl/tree/latest")
    with pytest.raises(FileNotFoundError):
        local_store.publish(str(tmp_path / "missing"), "srl/tree/latest")
    assert local_store.list_keys() == []


# ---------------------------------------------------------------------------------------------
# S3 over real HTTP: moto's server on loopback
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(moto_endpoint, monkeypatch, request) -> S3CheckpointStore:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = "ckpt-" + request.node.name.lower().replace("_", "-")[:40]
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3CheckpointStore(
        bucket=bucket,
        s3=S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1"),
    )


def test_s3_round_trip(tmp_path, s3_store):
    src = make_checkpoint(tmp_path / "src")
    info = s3_store.publish(str(src), "rlvr/personality/run-1")

    assert info.uri == f"s3://{s3_store.bucket}/checkpoints/rlvr/personality/run-1"
    assert info.sha256 == cs.manifest_digest(cs.scan_checkpoint_dir(src))
    assert info.files == 6
    assert s3_store.is_complete("rlvr/personality/run-1")
    assert s3_store.info("rlvr/personality/run-1") == info
    assert s3_store.list_keys() == ["rlvr/personality/run-1"]
    assert s3_store.list_keys("rlvr/personality") == ["rlvr/personality/run-1"]
    assert s3_store.list_keys("rlvr/person") == []  # whole segments

    out = Path(s3_store.fetch("rlvr/personality/run-1", str(tmp_path / "out")))
    assert tree(out) == tree(src)

    # the same content publishes to the same digest locally and in S3
    local = LocalCheckpointStore(root=str(tmp_path / "local"))
    assert local.publish(str(src), "rlvr/personality/run-1").sha256 == info.sha256


def test_s3_files_without_manifest_are_not_complete(tmp_path, s3_store):
    src = make_checkpoint(tmp_path / "src")
    client = s3_store.s3.get_client()
    for path, data in tree(src).items():  # an upload that died before its manifest
        client.put_object(Bucket=s3_store.bucket, Key=f"checkpoints/srl/facial/latest/{path}", Body=data)

    assert not s3_store.is_complete("srl/facial/latest")
    assert s3_store.list_keys() == []
    with pytest.raises(CheckpointIncompleteError, match="'srl/facial/latest'.*no _COMPLETE.json"):
        s3_store.fetch("srl/facial/latest", str(tmp_path / "out"))

    # publishing over the debris completes it
    s3_store.publish(str(src), "srl/facial/latest")
    assert s3_store.list_keys() == ["srl/facial/latest"]


def test_s3_replace_tamper_and_delete(tmp_path, s3_store):
    client = s3_store.s3.get_client()
    old = make_checkpoint(tmp_path / "old", extra={"only_in_old.txt": "x"})
    new = make_checkpoint(tmp_path / "new", weights=b"new weights")
    s3_store.publish(str(old), "srl/animal/latest")
    info = s3_store.publish(str(new), "srl/animal/latest")

    assert s3_store.info("srl/animal/latest") == info
    stored = client.list_objects_v2(Bucket=s3_store.bucket, Prefix="checkpoints/srl/animal/latest/")
    assert "checkpoints/srl/animal/latest/only_in_old.txt" not in {o["Key"] for o in stored["Contents"]}
    assert tree(Path(s3_store.fetch("srl/animal/latest", str(tmp_path / "out")))) == tree(new)

    # same-size corruption in the bucket is caught by the hash check on fetch
    weights = bytearray(b"new weights")
    weights[0] ^= 0xFF
    client.put_object(
        Bucket=s3_store.bucket, Key="checkpoints/srl/animal/latest/model.safetensors", Body=bytes(weights)
    )
    assert s3_store.is_complete("srl/animal/latest")  # sizes still match
    with pytest.raises(CheckpointIntegrityError, match=r"'srl/animal/latest'.*'model\.safetensors'"):
        s3_store.fetch("srl/animal/latest", str(tmp_path / "out2"))

    s3_store.delete("srl/animal/latest")
    s3_store.delete("srl/animal/latest")  # idempotent
    assert not s3_store.is_complete("srl/animal/latest")
    assert client.list_objects_v2(Bucket=s3_store.bucket, Prefix="checkpoints/").get("KeyCount") == 0


def test_s3_repr_hides_credentials(moto_endpoint):
    store = S3CheckpointStore(
        bucket="b",
        s3=S3Resource(endpoint_url=moto_endpoint, aws_access_key_id="AKIDSECRET", aws_secret_access_key="TOPSECRET"),
    )
    for text in (repr(store), str(store)):
        assert "TOPSECRET" not in text and "AKIDSECRET" not in text
        assert "bucket='b'" in text
