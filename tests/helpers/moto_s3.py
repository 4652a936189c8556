"""moto's S3 server on loopback for tests, reached the way a deployment reaches S3: through the
standard AWS variables (``AWS_ENDPOINT_URL``, keys, region) that boto3 reads itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

FAKE_KEY_ID = "AKIAMOTOTESTKEY00000"
FAKE_SECRET = "moto-secret-0123456789abcdefSECRET"


@contextlib.contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch, bucket: str = "srl-checkpoints") -> Iterator[str]:
    """Start moto on a free loopback port, point the AWS variables at it, create ``bucket``;
    yields the endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
                            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 for one test, through the AWS variables; yields the endpoint URL (import it into a
    test module to use it)."""
    with moto_s3(monkeypatch) as endpoint:
        yield endpoint
