"""The serving API (FastAPI): verified generation over the selected models. No Dagster imports here."""
