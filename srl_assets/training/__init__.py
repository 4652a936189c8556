"""Training plumbing shared by the SRL and RLVR stages (no Dagster import here)."""
