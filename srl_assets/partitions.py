"""The model-type partitions every asset shares."""

import dagster as dg

from srl_assets.domains import MODEL_TYPES

model_type_partitions = dg.StaticPartitionsDefinition(list(MODEL_TYPES))
