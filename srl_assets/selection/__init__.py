"""Choosing, for each responsibility (model type, skill), the candidate model with the best
quality for its cost and latency (``dynamic_model_selector``)."""
