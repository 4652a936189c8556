"""SRL stage: the step-wise reward and the dynamic-sampling filter (no Dagster imports)."""
