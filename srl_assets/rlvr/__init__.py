"""RLVR stage: outcome-reward training algorithms (no Dagster imports)."""
