"""Checkpoint store: publish, verify and fetch Hugging Face ``save_pretrained`` folders.

A checkpoint is a folder (config.json, model.safetensors, tokenizer files, training_config.json, ...)
stored under a slash-separated key such as ``"rlvr/personality/<run_id>"`` or ``"srl/facial/latest"``.

Completeness rule, the same for every backend: a checkpoint exists only when its ``_COMPLETE.json``
manifest is present, is valid (its digest matches its own file list) and lists exactly the files
stored under the key, with the listed sizes. The manifest is always written last, so a reader never
sees a half-written checkpoint as complete. ``fetch`` additionally verifies the sha256 of every file.

- ``LocalCheckpointStore`` writes into a hidden temporary sibling folder, writes the manifest last,
  then renames the folder into place (an older version is renamed aside first and deleted after).
- ``S3CheckpointStore`` removes any old manifest (the key reads as incomplete from then on), uploads
  the files, deletes stale objects, and uploads the manifest last. S3 single-object PUTs are atomic,
  so the manifest is the commit point.

The manifest helpers at module level are plain functions: tests and other code use them without Dagster.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import Field

MANIFEST_NAME = "_COMPLETE.json"
MANIFEST_FORMAT = 1
_CHUNK = 1024 * 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*$")
_MAX_KEY_LEN = 512

logger = dg.get_dagster_logger("checkpoint_store")


# ---------------------------------------------------------------------------------------------
# Errors and value types
# ---------------------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """Base class for checkpoint store errors."""


class CheckpointIncompleteError(CheckpointError):
    """The key has no complete checkpoint (missing/invalid manifest, or files that do not match it)."""


class CheckpointIntegrityError(CheckpointError):
    """A fetched file does not have the sha256 (or size) recorded in the manifest."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a published checkpoint is: where it lives and a content digest that identifies it.

    ``sha256`` is the manifest digest (see ``manifest_digest``): two publishes of the same file
    contents give the same value, wherever and whenever they are published.
    """

    uri: str
    size_bytes: int
    sha256: str
    files: int


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative POSIX path inside the checkpoint folder
    size: int
    sha256: str


# ---------------------------------------------------------------------------------------------
# Pure helpers: keys, hashing, manifests
# ---------------------------------------------------------------------------------------------


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe checkpoint key, else raise ``ValueError``.

    A key is 1+ slash-separated segments of ``[A-Za-z0-9._=+-]``; no empty segment, no segment
    starting with "." (hidden names are reserved for temporary folders), no "..", no manifest name.

    >>> validate_key("rlvr/personality/0b7c-41")
    'rlvr/personality/0b7c-41'
    """
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_LEN:
        raise ValueError(f"invalid checkpoint key {key!r}: must be a non-empty string of at most {_MAX_KEY_LEN} chars")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment) or segment == MANIFEST_NAME:
            raise ValueError(
                f"invalid checkpoint key {key!r}: segment {segment!r} must match {_SEGMENT.pattern} "
                f"(no empty, hidden or '..' segments)"
            )
    return key


def _validate_prefix(prefix: str) -> str:
    """A ``list_keys`` prefix: empty (everything) or a valid key (trailing slash tolerated)."""
    prefix = prefix.strip("/")
    return validate_key(prefix) if prefix else ""


def _under_prefix(key: str, prefix: str) -> bool:
    """Prefixes match whole segments: "srl/facial" matches "srl/facial/latest", not "srl/facial2"."""
    return not prefix or key == prefix or key.startswith(prefix + "/")


def _safe_relpath(path: str) -> str:
    """Reject manifest paths that could escape the checkpoint folder."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
        or path == MANIFEST_NAME
    ):
        raise ValueError(f"unsafe or reserved path in manifest: {path!r}")
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (safetensors files can be many GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(entries: list[ManifestEntry]) -> str:
    """Content digest of a checkpoint: sha256 of ``"<file sha256>  <path>\\n"`` lines sorted by path.

    The lines are ``sha256sum``'s output format, so the digest can be reproduced by hand. Sizes,
    timestamps and the key are deliberately left out: the digest identifies content only.
    """
    lines = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(entries, key=lambda e: e.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def scan_checkpoint_dir(local_dir: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Hash every regular file under ``local_dir`` (recursively), sorted by relative path.

    A top-level ``_COMPLETE.json`` is skipped: it is the store's own marker (e.g. in a folder that
    ``fetch`` produced and that is now being re-published under another key). Symlinks are followed,
    so a Hugging Face cache snapshot (a folder of links to blobs) publishes its real contents.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"checkpoint source {str(root)!r} is not a directory")
    entries = []
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=True):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST_NAME or not path.is_file():
                continue
            entries.append(ManifestEntry(path=rel, size=path.stat().st_size, sha256=file_sha256(path)))
    if not entries:
        raise ValueError(f"checkpoint source {str(root)!r} contains no files")
    return sorted(entries, key=lambda e: e.path)


def build_manifest(entries: list[ManifestEntry], key: str) -> dict[str, Any]:
    """The JSON document stored as ``_COMPLETE.json``."""
    entries = sorted(entries, key=lambda e: e.path)
    return {
        "format": MANIFEST_FORMAT,
        "key": key,
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sha256": manifest_digest(entries),
        "size_bytes": sum(e.size for e in entries),
        "files": [dataclasses.asdict(e) for e in entries],
    }


def parse_manifest(raw: bytes | str) -> list[ManifestEntry]:
    """Parse and validate a manifest; raise ``ValueError`` saying what is wrong.

    Valid means: known format, safe unique paths, hex sha256s, non-negative sizes, and a ``sha256``
    and ``size_bytes`` that agree with the file list (so a truncated or edited manifest is rejected).
    """
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"manifest format must be {MANIFEST_FORMAT}")
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        raise ValueError("manifest lists no files")
    entries = []
    for item in files:
        if not isinstance(item, dict):
            raise ValueError(f"manifest file entry is not an object: {item!r}")
        path, size, sha = item.get("path"), item.get("size"), item.get("sha256")
        if not isinstance(path, str):
            raise ValueError(f"manifest file entry has no path: {item!r}")
        _safe_relpath(path)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"manifest entry {path!r} has an invalid size {size!r}")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError(f"manifest entry {path!r} has an invalid sha256 {sha!r}")
        entries.append(ManifestEntry(path=path, size=size, sha256=sha))
    if len({e.path for e in entries}) != len(entries):
        raise ValueError("manifest lists a path twice")
    if doc.get("sha256") != manifest_digest(entries):
        raise ValueError("manifest sha256 does not match its file list")
    if doc.get("size_bytes") != sum(e.size for e in entries):
        raise ValueError("manifest size_bytes does not match its file list")
    return sorted(entries, key=lambda e: e.path)


def compare_to_manifest(entries: list[ManifestEntry], stored: dict[str, int]) -> str | None:
    """Why ``stored`` ({relative path: size}, manifest excluded) does not match, or None if it does."""
    expected = {e.path: e.size for e in entries}
    for path, size in sorted(expected.items()):
        if path not in stored:
            return f"file {path!r} is listed in the manifest but missing"
        if stored[path] != size:
            return f"file {path!r} has {stored[path]} bytes, manifest says {size}"
    extra = sorted(set(stored) - set(expected))
    if extra:
        return f"file {extra[0]!r} is stored but not listed in the manifest"
    return None


def info_from_entries(entries: list[ManifestEntry], uri: str) -> CheckpointInfo:
    return CheckpointInfo(
        uri=uri,
        size_bytes=sum(e.size for e in entries),
        sha256=manifest_digest(entries),
        files=len(entries),
    )


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree_if_exists(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _hidden_sibling(path: Path, purpose: str) -> Path:
    """A hidden, unique sibling of ``path``: same folder, so ``os.replace`` onto ``path`` is atomic."""
    return path.parent / f".{path.name}.{purpose}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


class CheckpointStore(dg.ConfigurableResource, abc.ABC):
    """Where checkpoints are published and fetched from; a local folder or S3.

    Backends implement a few storage primitives; completeness checks, ``info`` and the verified
    ``fetch`` are shared so every backend applies the same rules.
    """

    # -- backend primitives ----------------------------------------------------------------

    @abc.abstractmethod
    def publish(self, local_dir: str, key: str) -> CheckpointInfo:
        """Atomically publish the folder ``local_dir`` under ``key``, replacing any older version."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """``file://...`` or ``s3://bucket/prefix/key``."""

    @abc.abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Sorted keys of the complete checkpoints at or under ``prefix`` (whole segments)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the checkpoint (the manifest first, so it stops being complete at once). Idempotent."""

    @abc.abstractmethod
    def _read_manifest(self, key: str) -> bytes | None:
        """Raw manifest bytes, or None when there is none."""

    @abc.abstractmethod
    def _stored_files(self, key: str) -> dict[str, int]:
        """{relative path: size} of every file stored under the key, manifest excluded."""

    @abc.abstractmethod
    def _download(self, key: str, relpath: str, target: Path) -> None:
        """Copy one stored file to ``target`` (its parent folder exists)."""

    # -- shared behaviour --------------------------------------------------------------------

    def _completeness(self, key: str) -> tuple[list[ManifestEntry] | None, str]:
        """(entries, "") when complete, else (None, the reason)."""
        raw = self._read_manifest(key)
        if raw is None:
            return None, f"no {MANIFEST_NAME}"
        try:
            entries = parse_manifest(raw)
        except ValueError as exc:
            return None, f"invalid {MANIFEST_NAME}: {exc}"
        problem = compare_to_manifest(entries, self._stored_files(key))
        if problem is not None:
            return None, problem
        return entries, ""

    def _complete_entries(self, key: str) -> list[ManifestEntry]:
        entries, reason = self._completeness(validate_key(key))
        if entries is None:
            raise CheckpointIncompleteError(f"checkpoint {key!r} ({self.uri(key)}) is not complete: {reason}")
        return entries

    def is_complete(self, key: str) -> bool:
        """True when the manifest is valid and lists exactly the stored files with their sizes.

        Hashes are not recomputed here (that would read whole model files); ``fetch`` verifies them.
        """
        return self._completeness(validate_key(key))[0] is not None

    def info(self, key: str) -> CheckpointInfo:
        """The ``CheckpointInfo`` of a complete checkpoint; raises ``CheckpointIncompleteError``."""
        return info_from_entries(self._complete_entries(key), self.uri(key))

    def fetch(self, key: str, dest_dir: str) -> str:
        """Download a complete checkpoint into ``dest_dir`` (absent or empty), verifying every file.

        Files land in a hidden sibling of ``dest_dir`` first and are renamed into place only after
        all of them matched the manifest, so ``dest_dir`` never holds a partial or corrupt copy.
        The manifest is copied along, so the folder can be re-verified or re-published.
        Returns the absolute path of ``dest_dir``.
        """
        entries = self._complete_entries(key)
        dest = Path(dest_dir).absolute()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise FileExistsError(f"fetch destination {str(dest)!r} exists and is not an empty folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = _hidden_sibling(dest, "fetching")
        try:
            for entry in entries:
                target = staging / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                self._download(key, entry.path, target)
                actual_size = target.stat().st_size
                actual_sha = file_sha256(target)
                if actual_size != entry.size or actual_sha != entry.sha256:
                    raise CheckpointIntegrityError(
                        f"checkpoint {key!r} ({self.uri(key)}): file {entry.path!r} is corrupt: "
                        f"sha256 {actual_sha} ({actual_size} bytes), manifest says "
                        f"{entry.sha256} ({entry.size} bytes)"
                    )
            raw = self._read_manifest(key)
            if raw is None or parse_manifest(raw) != entries:
                raise CheckpointIncompleteError(f"checkpoint {key!r} was replaced or deleted during fetch")
            (staging / MANIFEST_NAME).write_bytes(raw)
            if dest.exists():
                dest.rmdir()
            os.replace(staging, dest)
        finally:
            _rmtree_if_exists(staging)
        logger.info(f"fetched checkpoint {key!r} from {self.uri(key)} to {dest}")
        return str(dest)


# ---------------------------------------------------------------------------------------------
# Local folder
# ---------------------------------------------------------------------------------------------


class LocalCheckpointStore(CheckpointStore):
    """Checkpoints as folders ``<root>/<key>/`` on a local (or mounted) filesystem."""

    root: str = Field(description="Folder that holds the checkpoints; created on first publish.")

    def _path(self, key: str) -> Path:
        return Path(self.root).absolute() / validate_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _read_manifest(self, key: str) -> bytes | None:
        path = self._path(key) / MANIFEST_NAME
        return path.read_bytes() if path.is_file() else None

    def _stored_files(self, key: str) -> dict[str, int]:
        folder = self._path(key)
        if not folder.is_dir():
            return {}
        stored = {}
        for path in folder.rglob("*"):
            if path.is_file() or path.is_symlink():
                rel = path.relative_to(folder).as_posix()
                if rel != MANIFEST_NAME:
                    stored[rel] = path.lstat().st_size
        return stored

    def _download(self, key: str, relpath: str, target: Path) -> None:
        shutil.copyfile(self._path(key) / relpath, target)

    def _check_not_nested(self, key: str) -> None:
        """Keys may not nest (publishing "a/b" would replace the folder holding "a/b/c")."""
        parts = key.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i])
            if (self._path(ancestor) / MANIFEST_NAME).exists():
                raise ValueError(f"cannot publish {key!r}: {ancestor!r} is a checkpoint and keys may not nest")
        folder = self._path(key)
        if folder.is_dir():
            for manifest in folder.rglob(MANIFEST_NAME):
                if manifest.parent != folder:
                    inner = manifest.parent.relative_to(folder).as_posix()
                    raise ValueError(f"cannot publish {key!r}: checkpoint {key + '/' + inner!r} lives under it")

    def publish(self, local_dir: str, key: str) -> CheckpointInfo:
        key = validate_key(key)
        self._check_not_nested(key)
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = _hidden_sibling(dest, "publishing")
        aside: Path | None = None
        try:
            # 1. copy aside; hash the copies, so the manifest describes what was actually stored
            shutil.copytree(local_dir, staging, ignore=_ignore_top_level_manifest(local_dir))
            entries = scan_checkpoint_dir(staging)
            for entry in entries:
                _fsync_file(staging / entry.path)
            # 2. the manifest last: a crash before this line leaves nothing that reads as complete
            manifest_path = staging / MANIFEST_NAME
            manifest_path.write_text(json.dumps(build_manifest(entries, key), indent=2, sort_keys=True))
            _fsync_file(manifest_path)
            # 3. swap in: old version aside, new one in, old one deleted; restore the old on failure
            if dest.exists():
                aside = _hidden_sibling(dest, "replaced")
                os.replace(dest, aside)
            try:
                os.replace(staging, dest)
            except BaseException:
                if aside is not None:
                    os.replace(aside, dest)
                    aside = None
                raise
            _fsync_dir(dest.parent)
        finally:
            _rmtree_if_exists(staging)
            if aside is not None:
                _rmtree_if_exists(aside)
        info = info_from_entries(entries, self.uri(key))
        logger.info(f"published checkpoint {key!r} to {info.uri} ({info.files} files, {info.size_bytes} bytes)")
        return info

    def list_keys(self, prefix: str = "") -> list[str]:
        prefix = _validate_prefix(prefix)
        root = Path(self.root).absolute()
        start = root / prefix if prefix else root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            # hidden folders are in-flight publishes, fetches or replaced versions: never listed
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if MANIFEST_NAME in filenames:
                dirnames[:] = []  # keys do not nest
                key = Path(dirpath).relative_to(root).as_posix()
                if _under_prefix(key, prefix) and self.is_complete(key):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        dest = self._path(key)
        if not dest.exists():
            return
        # rename aside first: the key disappears atomically, then the bytes are removed
        tomb = _hidden_sibling(dest, "deleting")
        os.replace(dest, tomb)
        shutil.rmtree(tomb)
        logger.info(f"deleted checkpoint {key!r}")


def _ignore_top_level_manifest(src: str):
    top = os.path.abspath(src)

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [MANIFEST_NAME] if os.path.abspath(directory) == top and MANIFEST_NAME in names else []

    return ignore


# ---------------------------------------------------------------------------------------------
# S3 (or any S3-compatible server: MinIO, moto, R2, ...)
# ---------------------------------------------------------------------------------------------


class S3CheckpointStore(CheckpointStore):
    """Checkpoints as objects ``s3://<bucket>/<prefix>/<key>/<file>`` plus ``<key>/_COMPLETE.json``.

    Credentials, region and endpoint come from the nested ``S3Resource`` (dagster-aws); they are
    never logged and are left out of this resource's repr.
    """

    bucket: str = Field(description="Bucket that holds the checkpoints.")
    prefix: str = Field(default="checkpoints", description="Object-key prefix for all checkpoints.")
    s3: S3Resource = Field(description="dagster-aws S3 resource: credentials, region, endpoint_url.")

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        # S3Resource's own repr includes aws_secret_access_key: show only harmless connection facts
        yield "bucket", self.bucket
        yield "prefix", self.prefix
        yield "endpoint_url", self.s3.endpoint_url
        yield "region_name", self.s3.region_name

    def _client(self) -> Any:
        return self.s3.get_client()

    def _base(self, key: str) -> str:
        """Object-key prefix of a checkpoint, without trailing slash."""
        key = validate_key(key)
        root = self.prefix.strip("/")
        return f"{root}/{key}" if root else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._base(key)}"

    def _list(self, client: Any, object_prefix: str) -> dict[str, int]:
        """{object key: size} of every object under ``object_prefix``."""
        objects = {}
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=object_prefix):
            for obj in page.get("Contents", []):
                objects[obj["Key"]] = obj["Size"]
        return objects

    def _get(self, client: Any, object_key: str) -> bytes | None:
        try:
            return client.get_object(Bucket=self.bucket, Key=object_key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def _read_manifest(self, key: str) -> bytes | None:
        return self._get(self._client(), f"{self._base(key)}/{MANIFEST_NAME}")

    def _stored_files(self, key: str) -> dict[str, int]:
        base = self._base(key) + "/"
        objects = self._list(self._client(), base)
        return _relative_files(objects, base)

    def _download(self, key: str, relpath: str, target: Path) -> None:
        self._client().download_file(self.bucket, f"{self._base(key)}/{relpath}", str(target))

    def _delete_objects(self, client: Any, object_keys: list[str]) -> None:
        for i in range(0, len(object_keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in object_keys[i : i + 1000]]
            response = client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise CheckpointError(f"S3 delete failed for {first.get('Key')!r}: {first.get('Code')}")

    def publish(self, local_dir: str, key: str) -> CheckpointInfo:
        key = validate_key(key)
        client = self._client()
        base = self._base(key)
        manifest_key = f"{base}/{MANIFEST_NAME}"
        entries = scan_checkpoint_dir(local_dir)

        # keys may not nest: "a/b" would otherwise own the objects of "a/b/c"
        parts = key.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i])
            if self._get(client, f"{self._base(ancestor)}/{MANIFEST_NAME}") is not None:
                raise ValueError(f"cannot publish {key!r}: {ancestor!r} is a checkpoint and keys may not nest")
        existing = self._list(client, base + "/")
        nested = [k for k in existing if k.endswith("/" + MANIFEST_NAME) and k != manifest_key]
        if nested:
            raise ValueError(f"cannot publish {key!r}: checkpoint manifest {nested[0]!r} lives under it")

        # 1. retire the old manifest: from here until step 4 the key reads as incomplete, never mixed
        if manifest_key in existing:
            self._delete_objects(client, [manifest_key])
        # 2. upload the files (upload_file switches to multipart for large safetensors)
        source = Path(local_dir)
        for entry in entries:
            client.upload_file(str(source / entry.path), self.bucket, f"{base}/{entry.path}")
        # 3. remove files of the old version that the new one does not have
        wanted = {f"{base}/{e.path}" for e in entries}
        stale = sorted(k for k in existing if k not in wanted and k != manifest_key)
        if stale:
            self._delete_objects(client, stale)
        # 4. the manifest last: the single PUT that makes the checkpoint complete
        body = json.dumps(build_manifest(entries, key), indent=2, sort_keys=True).encode("utf-8")
        client.put_object(Bucket=self.bucket, Key=manifest_key, Body=body, ContentType="application/json")

        info = info_from_entries(entries, self.uri(key))
        logger.info(f"published checkpoint {key!r} to {info.uri} ({info.files} files, {info.size_bytes} bytes)")
        return info

    def list_keys(self, prefix: str = "") -> list[str]:
        prefix = _validate_prefix(prefix)
        client = self._client()
        root = self.prefix.strip("/")
        root_slash = f"{root}/" if root else ""
        # one listing gives every candidate manifest and every file size; then one GET per manifest
        objects = self._list(client, root_slash + prefix)
        keys = []
        for object_key in sorted(objects):
            if not object_key.endswith("/" + MANIFEST_NAME):
                continue
            key = object_key[len(root_slash) : -len("/" + MANIFEST_NAME)]
            try:
                validate_key(key)
            except ValueError:
                continue  # not something this store wrote
            if not _under_prefix(key, prefix):
                continue
            raw = self._get(client, object_key)
            if raw is None:
                continue
            try:
                entries = parse_manifest(raw)
            except ValueError:
                continue
            if compare_to_manifest(entries, _relative_files(objects, self._base(key) + "/")) is None:
                keys.append(key)
        return keys

    def delete(self, key: str) -> None:
        client = self._client()
        base = self._base(key)
        manifest_key = f"{base}/{MANIFEST_NAME}"
        objects = self._list(client, base + "/")
        if not objects:
            return
        # the manifest first: the key stops being complete before any file disappears
        if manifest_key in objects:
            self._delete_objects(client, [manifest_key])
        self._delete_objects(client, sorted(k for k in objects if k != manifest_key))
        logger.info(f"deleted checkpoint {key!r}")


def _relative_files(objects: dict[str, int], base_slash: str) -> dict[str, int]:
    """Objects under ``base_slash`` as {relative path: size}, manifest and folder markers excluded."""
    return {
        k[len(base_slash) :]: size
        for k, size in objects.items()
        if k.startswith(base_slash) and not k.endswith("/") and k[len(base_slash) :] != MANIFEST_NAME
    }


# ---------------------------------------------------------------------------------------------
# From a URI (the SRL_CHECKPOINT_URI setting, and what a training child is told)
# ---------------------------------------------------------------------------------------------


def checkpoint_store_from_uri(uri: str) -> CheckpointStore:
    """``s3://bucket[/prefix]`` -> ``S3CheckpointStore``; anything else (a folder path or
    ``file://`` URI) -> ``LocalCheckpointStore``.

    The S3 store carries no credentials, region or endpoint in its config: boto3 reads them from the
    standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_PROFILE``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
    an instance or pod role), so no secret is ever part of a resource's config.

    >>> checkpoint_store_from_uri("s3://models/srl").prefix
    'srl'
    >>> checkpoint_store_from_uri("/data/checkpoints").root
    '/data/checkpoints'
    """
    if not uri:
        raise ValueError("checkpoint URI is empty: give a folder or s3://bucket/prefix")
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"checkpoint URI {uri!r} names no bucket: expected s3://bucket/prefix")
        return S3CheckpointStore(bucket=bucket, prefix=prefix.strip("/"), s3=S3Resource())
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"checkpoint URI {uri!r}: only a folder, file:// or s3:// is supported")
    return LocalCheckpointStore(root=uri[len("file://"):] if uri.startswith("file://") else uri)


def store_uri(store: CheckpointStore) -> str:
    """The URI that ``checkpoint_store_from_uri`` turns back into an equivalent store."""
    if isinstance(store, S3CheckpointStore):
        return f"s3://{store.bucket}/{store.prefix.strip('/')}".rstrip("/")
    if isinstance(store, LocalCheckpointStore):
        return str(Path(store.root).absolute())
    raise TypeError(f"no URI form for checkpoint store {type(store).__name__}")


def key_of_uri(store: CheckpointStore, uri: str) -> str | None:
    """The key of ``uri`` (as ``store.uri(key)`` gives it) in ``store``, or None if it lies elsewhere."""
    if isinstance(store, S3CheckpointStore):
        base = f"s3://{store.bucket}/" + (f"{store.prefix.strip('/')}/" if store.prefix.strip("/") else "")
        return uri[len(base):] if uri.startswith(base) else None
    if isinstance(store, LocalCheckpointStore):
        base = Path(store.root).absolute().as_uri() + "/"
        return uri[len(base):] if uri.startswith(base) else None
    return None
