"""What the budget benchmarks (rlvr_budget.py, srl_budget.py) share: the base checkpoint a demo published,
and a training stage run in this process on rows written to a folder."""

from __future__ import annotations

from pathlib import Path

from resources.duckdb_store import DuckDBStore
from srl_assets.assets.training_support import latest_checkpoint
from srl_assets.training.stages import run_stage, write_rows


def base_checkpoint(store: DuckDBStore, model_type: str) -> str:
    """The folder of the newest base checkpoint published for ``model_type``; exits if there is none."""
    try:
        return latest_checkpoint(store, "base", model_type)["uri"].removeprefix("file://")
    except LookupError as exc:
        raise SystemExit(f"{exc} (run `make demo` first)") from None


def run_stage_in(folder: Path, name: str, model_type: str, rows: list[dict], config: dict,
                 model_path: str | None) -> dict:
    """Run training stage ``name`` (srl_assets/training/stages.py) with its work and output under ``folder``
    (a new folder); returns the stage's summary with ``out_dir``."""
    folder.mkdir()
    write_rows(folder / "in.jsonl", rows)
    spec = {"stage": name, "model_type": model_type, "rules_dir": None, "work_dir": str(folder / "work"),
            "out_dir": str(folder / "out"), "data": str(folder / "in.jsonl"), "config": config,
            "model_path": model_path, "report_to": []}
    return {**run_stage(spec, lambda row: None), "out_dir": spec["out_dir"]}
