"""Session fixtures: one Vertex fake (+ Cloud Storage emulator) and one Bedrock fake (moto + front)
for every paid fine-tuning test module, so their servers start once per test session.

Tests only add state to them (jobs, objects, deployments) and count relative to what was there;
whatever a test changes for itself (responder, scripted states, refusals) it restores.
Registered in tests/conftest.py ``pytest_plugins``.
"""

from __future__ import annotations

import pytest

from helpers.fake_bedrock import FakeBedrock
from helpers.fake_vertex import FakeVertex

BUCKET = "srl-tuning"


def answer_to(prompt: str) -> str:
    return f"answer to {prompt}"


@pytest.fixture(scope="session")
def vertex_fake():
    with FakeVertex(responder=answer_to) as fake:
        fake.create_bucket(BUCKET)
        yield fake


@pytest.fixture(scope="session")
def bedrock_fake():
    with FakeBedrock(responder=answer_to) as fake:
        fake.client("s3").create_bucket(Bucket=BUCKET)
        yield fake
