"""Asset modules, one per stage of the pipeline."""
