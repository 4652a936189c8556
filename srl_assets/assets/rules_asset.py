"""The ``rules`` asset: a model type's validated rules and lore; data version = rules version."""

import dagster as dg

from resources.rules import RulesResource
from srl_assets.partitions import model_type_partitions


@dg.asset(partitions_def=model_type_partitions, group_name="data", kinds={"yaml"}, code_version="1",
          description="Versioned rules and lore of the model type, validated on load.")
def rules(context: dg.AssetExecutionContext, rules_resource: RulesResource) -> dg.MaterializeResult:
    domain, loaded = rules_resource.load(context.partition_key)
    skills = "\n".join(f"| `{s}` | {d} |" for s, d in domain.skills.items())
    return dg.MaterializeResult(
        data_version=dg.DataVersion(loaded.version),
        metadata={
            "rules_version": loaded.version,
            "semver": loaded.semver,
            "source": dg.MetadataValue.path(loaded.source),
            "lore_passages": len(loaded.lore),
            "skills": dg.MetadataValue.md(f"| skill | checks |\n|---|---|\n{skills}"),
        },
    )
