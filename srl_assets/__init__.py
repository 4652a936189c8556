"""SRL -> RLVR training platform: the Dagster code location and the domain library it runs."""
