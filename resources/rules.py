"""RulesResource: where the rules and lore files are read from (the packaged ones by default)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from srl_assets.domains import get_domain
from srl_assets.domains.base import Domain, Rules
from srl_assets.rules_integration import RulesIntegration


class RulesResource(dg.ConfigurableResource):
    rules_dir: str | None = Field(default=None, description="Folder with <model_type>.yaml/.md; "
                                  "empty = the files shipped in srl_assets/domains/rules.")

    def load(self, model_type: str) -> tuple[Domain, Rules]:
        return get_domain(model_type), RulesIntegration(self.rules_dir).load(model_type)
