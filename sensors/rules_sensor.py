"""rules_change_sensor: a new rules version rematerializes that partition's pipeline.

Each tick loads every model type's rules (validated) and compares their version with the data
version of the last ``rules`` materialization. A different version means the files changed: the
partition's downstream assets are now stale, and a run of the whole pipeline for that partition is
requested (run key = the new version, so each version triggers once), with the run config of the
partition's last successful run.
"""

from __future__ import annotations

import dagster as dg

from resources.rules import RulesResource
from sensors.weakness_sensor import last_run_config
from srl_assets.domains import MODEL_TYPES
from srl_assets.domains.base import RulesError

RULES_KEY = dg.AssetKey("rules")


def changed_partitions(instance: dg.DagsterInstance, rules_resource: RulesResource) -> tuple[dict[str, str], list[str]]:
    """(model type -> new version, errors) for partitions whose rules differ from the last materialization."""
    changed, errors = {}, []
    for model_type in MODEL_TYPES:
        try:
            _, rules = rules_resource.load(model_type)
        except RulesError as exc:
            errors.append(str(exc))
            continue
        record = instance.get_latest_data_version_record(RULES_KEY, partition_key=model_type)
        current = record.asset_materialization.tags.get("dagster/data_version") if record else None
        if current is not None and current != rules.version:
            changed[model_type] = rules.version
    return changed, errors


def build_rules_change_sensor(job: dg.UnresolvedAssetJobDefinition, minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(name="rules_change_sensor", job=job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Rematerializes a model type's pipeline when its rules or lore files change.")
    def rules_change_sensor(context: dg.SensorEvaluationContext, rules_resource: RulesResource):
        changed, errors = changed_partitions(context.instance, rules_resource)
        for error in errors:
            context.log.error(f"rules file invalid, not retraining: {error}")
        if not changed:
            return dg.SkipReason("rules unchanged since their last materialization"
                                 + (f"; {len(errors)} invalid rules file(s)" if errors else ""))
        # The partition's own settings (a real base model, its presets), rebuilt from the start.
        return [dg.RunRequest(run_key=f"rules-{model_type}-{version}", partition_key=model_type,
                              run_config=last_run_config(context.instance, model_type),
                              tags={"srl/trigger": "rules_change", "srl/rules_version": version})
                for model_type, version in changed.items()]

    return rules_change_sensor
