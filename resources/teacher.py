"""TeacherResource: which TeacherPlanner writes expert trajectories, and its connection settings."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from srl_assets.collaboration.teacher_planner import TeacherPlanner, make_teacher
from srl_assets.domains.base import Domain, Rules


class TeacherResource(dg.ConfigurableResource):
    kind: Literal["procedural", "openai", "hf"] = Field(
        default="procedural", description="procedural (solves from the rules), openai (an "
        "OpenAI-compatible endpoint) or hf (a local Hugging Face causal LM).")
    base_url: str | None = Field(default=None, description="openai: the endpoint, e.g. http://host:8000/v1")
    model: str | None = Field(default=None, description="openai: model name; hf: a path or hub name")
    api_key: str | None = Field(default=None, description="openai: set from dg.EnvVar('TEACHER_API_KEY'), "
                                "the teacher's own key (never another provider's).")
    timeout_s: float = Field(default=60.0, description="openai: seconds per call before it counts as failed.")
    max_retries: int = Field(default=4, description="openai: retries of a call on 429, 5xx and connection "
                             "errors, with exponential backoff.")
    backoff_s: float = Field(default=1.0, description="openai: first backoff wait; it doubles per retry (jittered, "
                             "at most 30 s).")

    def __repr_args__(self):
        # the key itself never appears (a resolved resource may be printed in a log or a traceback)
        for name in type(self).model_fields:
            value = getattr(self, name)
            yield name, ("<set>" if value else None) if name == "api_key" else value

    def get_teacher(self, domain: Domain, rules: Rules) -> TeacherPlanner:
        if self.kind == "procedural":
            return make_teacher("procedural", domain, rules)
        if not self.model:
            raise ValueError(f"teacher kind {self.kind!r} needs 'model'")
        if self.kind == "openai":
            if not self.base_url:
                raise ValueError("teacher kind 'openai' needs 'base_url'")
            return make_teacher("openai", domain, rules, base_url=self.base_url, model=self.model,
                                api_key=self.api_key, timeout_s=self.timeout_s, max_retries=self.max_retries,
                                backoff_s=self.backoff_s)
        return make_teacher("hf", domain, rules, model_name_or_path=self.model)
