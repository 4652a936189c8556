"""Sensors of the platform (weakness-driven retraining, rules changes)."""
