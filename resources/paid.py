"""PaidFineTuningResource: builds the hosted fine-tuning providers (srl_assets.paid) from settings.

Secrets never pass through here as plain config: ``openai_api_key`` is meant to be
``dg.EnvVar("OPENAI_API_KEY")`` (Dagster resolves it at run time and shows only the variable's
name in the UI), or left empty so the SDK reads the environment itself. Google and AWS
credentials are left to their SDKs' own lookup (GOOGLE_APPLICATION_CREDENTIALS / ADC, AWS_* /
profiles / roles); the only exception is ``vertex_access_token``, a fixed bearer the Vertex
provider accepts only together with ``vertex_base_url`` (a loopback fake in tests, or a proxy).
``today`` pins the availability clock (tests, or replaying a decision).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from srl_assets.paid import get_provider, provider_names
from srl_assets.paid.base import PaidFineTuner


class PaidFineTuningResource(dg.ConfigurableResource):
    """Settings of the three providers; ``provider(name)`` returns a ready PaidFineTuner."""

    openai_api_key: str | None = Field(default=None, description="Pass dg.EnvVar('OPENAI_API_KEY'); empty = "
                                       "the openai SDK reads OPENAI_API_KEY itself.")
    openai_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL (…/v1); empty = "
                                        "the SDK default (or OPENAI_BASE_URL).")
    openai_max_retries: int = Field(default=2, description="SDK-level retries for control-plane calls; "
                                    "evaluation calls are retried by paid.evaluation instead.")
    vertex_project: str | None = Field(default=None, description="Google Cloud project for Vertex tuning.")
    vertex_location: str | None = Field(default=None, description="Vertex region, e.g. us-central1.")
    vertex_bucket: str | None = Field(default=None, description="Cloud Storage bucket for training data.")
    vertex_base_url: str | None = Field(default=None, description="Override of the Vertex API URL (tests).")
    gcs_endpoint: str | None = Field(default=None, description="Override of the Cloud Storage URL (emulator).")
    vertex_access_token: str | None = Field(default=None, description="A fixed bearer for the Vertex stand-in at "
                                            "vertex_base_url (tests, proxies); refused without vertex_base_url: "
                                            "Vertex itself always uses Application Default Credentials. Pass "
                                            "dg.EnvVar('SRL_VERTEX_ACCESS_TOKEN').")
    bedrock_region: str | None = Field(default=None, description="AWS region of Bedrock, e.g. us-east-1.")
    bedrock_role_arn: str | None = Field(default=None, description="IAM role Bedrock assumes to read/write S3.")
    bedrock_bucket: str | None = Field(default=None, description="S3 bucket for training data and outputs.")
    bedrock_endpoint_url: str | None = Field(default=None, description="Override of Bedrock + S3 URL (moto).")
    bedrock_runtime_endpoint_url: str | None = Field(default=None, description="Override of bedrock-runtime URL.")
    bedrock_deploy_poll_s: float | None = Field(default=None, description="Seconds between readiness checks of a "
                                                "new custom model deployment or provisioned throughput; empty = 30.")
    today: str | None = Field(default=None, description="Pin the availability clock (YYYY-MM-DD); empty = today.")

    def clock(self):
        pinned = date.fromisoformat(self.today) if self.today else None
        return (lambda: pinned) if pinned else date.today

    def _settings(self, name: str) -> dict[str, Any]:
        if name == "openai":
            import openai
            kwargs = {k: v for k, v in {"api_key": self.openai_api_key, "base_url": self.openai_base_url}.items() if v}
            # Built on first use: a dry run never needs the key.
            return {"client_factory": lambda: openai.OpenAI(max_retries=self.openai_max_retries, **kwargs)}
        by_provider = {
            "vertex": {"project": self.vertex_project, "location": self.vertex_location, "bucket": self.vertex_bucket,
                       "base_url": self.vertex_base_url, "storage_endpoint": self.gcs_endpoint,
                       "access_token": self.vertex_access_token},
            "bedrock": {"region": self.bedrock_region, "role_arn": self.bedrock_role_arn, "bucket": self.bedrock_bucket,
                        "endpoint_url": self.bedrock_endpoint_url,
                        "runtime_endpoint_url": self.bedrock_runtime_endpoint_url,
                        "deploy_poll_s": self.bedrock_deploy_poll_s},
        }
        return {k: v for k, v in by_provider.get(name, {}).items() if v is not None}

    def provider(self, name: str) -> PaidFineTuner:
        if name not in provider_names():
            raise ValueError(f"unknown paid fine-tuning provider {name!r}; valid: {provider_names()}")
        return get_provider(name, clock=self.clock(), **self._settings(name))


def paid_resource_from_env() -> PaidFineTuningResource:
    """The resource as the code location builds it (README, Configuration). The OpenAI key stays an
    unresolved EnvVar (the UI shows its name, never its value); Google and AWS credentials are left
    to their SDKs."""
    import os

    def env(name: str) -> str | None:
        return os.environ.get(name) or None

    return PaidFineTuningResource(
        openai_api_key=dg.EnvVar("OPENAI_API_KEY") if env("OPENAI_API_KEY") else None,
        openai_base_url=env("OPENAI_BASE_URL"),
        vertex_project=env("SRL_VERTEX_PROJECT") or env("GOOGLE_CLOUD_PROJECT"),
        vertex_location=env("SRL_VERTEX_LOCATION") or env("GOOGLE_CLOUD_LOCATION"),
        vertex_bucket=env("SRL_VERTEX_BUCKET"),
        bedrock_region=env("SRL_BEDROCK_REGION") or env("AWS_REGION"),
        bedrock_role_arn=env("SRL_BEDROCK_ROLE_ARN"),
        bedrock_bucket=env("SRL_BEDROCK_BUCKET"),
        today=env("SRL_PAID_TODAY"),
    )
