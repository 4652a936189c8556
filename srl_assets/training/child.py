"""The training child process: ``python -m srl_assets.training.child [--spec job.json]``.

Launched by Dagster Pipes (``PipesSubprocessClient``), it reads the job spec from the Pipes extras,
streams metrics back as log lines and reports the materialization; run by hand, it reads
``--spec``. Either way the summary is written to ``<out_dir>/summary.json`` and the model to
``out_dir``; the parent publishes it atomically, so a killed child never leaves a checkpoint that
looks complete. A crash here cannot take the Dagster process down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _write_summary(spec: dict, summary: dict) -> None:
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "training_config.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "data"},
                                                         indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    from srl_assets.training.processes import is_main_process
    from srl_assets.training.stages import run_stage

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", help="job spec JSON (default: the Dagster Pipes extras)")
    args = parser.parse_args(argv)
    # Under `accelerate launch` every rank runs this; only rank 0 talks to Dagster and writes the
    # summary (the trainers themselves save the model on the main process only).
    main_rank = is_main_process()
    if PipesEnvVarParamsLoader().is_dagster_pipes_process() and main_rank:
        with open_dagster_pipes() as pipes:
            spec = json.loads(Path(args.spec).read_text()) if args.spec else pipes.extras["job"]
            summary = run_stage(spec, lambda row: pipes.log.info(json.dumps(row, default=str)))
            _write_summary(spec, summary)
            pipes.report_asset_materialization(metadata={
                "steps": summary.get("steps", 0),
                "stage": summary.get("stage"),
            })
        return 0
    if not args.spec:
        parser.error("--spec is required outside Dagster Pipes (and on ranks other than 0)")
    spec = json.loads(Path(args.spec).read_text())
    # Every process logs the same (gathered) metrics: the main one prints them, the others stay quiet.
    summary = run_stage(spec, (lambda row: print(json.dumps(row, default=str), flush=True)) if main_rank
                        else (lambda row: None))
    if main_rank:
        _write_summary(spec, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
