"""Which SRL stage shows its effect in the pipeline, and does it help the RLVR after it?

From the base checkpoint that `make demo` published for one model type, runs the pipeline's SRL stage
(the child stage the `srl_checkpoint` asset runs, on the same step instances: `step_rows` 'unseen') once
per variant, each variant the stage's defaults (SRL_DEFAULTS) with a JSON override; with ``--rlvr``,
then the pipeline's RLVR stage (the `rlvr_checkpoint` asset's defaults: RFT, two rounds of 800) from the
base and from every SRL variant. Greedy-evaluates every model on the same fresh held-out tasks (paired,
the performance report's prompts). Not a test: minutes per run.

    make demo   # once: publishes base checkpoints and srl_steps under .dagster_home
    .venv/bin/python benchmarks/srl_budget.py plant \\
        --variant stage='{}' --variant rft48='{"update": "rft", "prompts_per_step": 48, "num_generations": 4, "learning_rate": 3e-4}'
    .venv/bin/python benchmarks/srl_budget.py tree --variant stage='{}' --rlvr --n-eval 200

Its last lines are JSON: one per model (pass rate, mean score on the held-out tasks, seconds of training),
then the paired differences of each SRL variant against the base (and, with ``--rlvr``, of each
SRL->RLVR against base->RLVR) with McNemar's exact p-value.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import transformers

from resources.duckdb_store import DuckDBStore
from resources.training import TrainingResource
from srl_assets.assets.training import BaseModelConfig, RLVRConfig, SRLConfig, rlvr_stage_rows, srl_stage_rows
from srl_assets.assets.trajectories import load_tasks
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.performance.recipe_stats import mcnemar_exact
from srl_assets.rules_integration import RulesIntegration
from srl_assets.settings import duckdb_path
from srl_assets.training.configs import SRL_DEFAULTS
from srl_assets.training.stages import read_rows

from demo_home import base_checkpoint, run_stage_in

# srl_checkpoint's default step rows ('unseen': the trajectories outside base_model's default SFT slice)
STEP_ROWS = SRLConfig.model_fields["step_rows"].default
BASE_SFT_TRAJECTORIES = BaseModelConfig.model_fields["sft_trajectories"].default
LORE_K = TrainingResource.model_fields["policy_lore_k"].default  # the pipeline's policy prompts


def _variant(text: str) -> tuple[str, dict]:
    name, sep, override = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--variant {text!r}: expected NAME=JSON, e.g. stage='{{}}'")
    try:
        value = json.loads(override)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--variant {name}: the override is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"--variant {name}: the override must be a JSON object, got {override!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_type")
    parser.add_argument("--variant", action="append", type=_variant, required=True,
                        help="NAME=JSON: an SRL stage override of SRL_DEFAULTS ('{}' = the pipeline's stage)")
    parser.add_argument("--rlvr", action="store_true", help="also RLVR (the pipeline's defaults) after base and each")
    parser.add_argument("--n-eval", type=int, default=200, help="fresh held-out (eval-split) tasks")
    parser.add_argument("--eval-seed", type=int, default=12345)
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()  # a line per stage instead (the stages' own bars)
    variants = dict(args.variant)
    if len(variants) != len(args.variant):
        raise SystemExit("--variant names must be distinct")

    mt = args.model_type
    store = DuckDBStore(database=duckdb_path())
    base = base_checkpoint(store, mt)
    steps = store.read("srl_steps", mt)
    srl_rows = srl_stage_rows(mt, steps, STEP_ROWS, BASE_SFT_TRAJECTORIES)
    rules = RulesIntegration().load(mt)
    generator = DynamicExampleGenerator(get_domain(mt), rules)
    held_out = generator.generate(args.n_eval, "eval", args.eval_seed)
    eval_rows = [{"task": t.to_row(), "prompt": p} for t, p in zip(held_out, policy_prompts(held_out, rules, LORE_K),
                                                                    strict=True)]
    rlvr_config = RLVRConfig()
    rlvr_rows = []
    if args.rlvr:
        rlvr_rows, _, _ = rlvr_stage_rows(load_tasks(store, mt, "train"), generator, rules, rlvr_config, LORE_K)

    seconds: dict[str, float] = {}  # training seconds per trained model
    with tempfile.TemporaryDirectory() as tmp:
        def stage(name: str, model: str, rows: list[dict], config: dict, model_path: str | None) -> str:
            t0 = time.perf_counter()
            out_dir = run_stage_in(Path(tmp) / model.replace(":", "-").replace(">", "-"), name, mt, rows, config,
                                   model_path)["out_dir"]
            if name != "evaluate":
                seconds[model] = round(time.perf_counter() - t0, 1)
            print(f"{mt}: {model} done in {round(time.perf_counter() - t0, 1)} s", flush=True)
            return out_dir

        models = {"base": base}
        for name, override in variants.items():
            models[f"srl:{name}"] = stage("srl", f"srl:{name}", srl_rows, {**SRL_DEFAULTS, **override}, base)
        if args.rlvr:
            algo = {"algorithm": "rft", **rlvr_config.rft.model_dump()}
            for start in list(models):
                models[f"{start}>rlvr"] = stage("rlvr", f"{start}>rlvr", rlvr_rows, algo, models[start])
        out = stage("evaluate", "evaluate", eval_rows, {"candidates": models, "seed": 0}, None)
        records = read_rows(Path(out) / "records.jsonl")
    passed = {m: [r["passed"] for r in records if r["candidate"] == m] for m in models}
    for m, rows in passed.items():
        scores = [r["score"] for r in records if r["candidate"] == m]
        print(json.dumps({"model_type": mt, "model": m, "n": len(rows), "pass_rate": round(sum(rows) / len(rows), 3),
                          "mean_score": round(sum(scores) / len(scores), 3),
                          "train_seconds": seconds.get(m)}))
    pairs = [(f"srl:{n}", "base") for n in variants]
    if args.rlvr:
        pairs += [(f"srl:{n}>rlvr", "base>rlvr") for n in variants]
    for a, b in pairs:
        only_a = sum(x and not y for x, y in zip(passed[a], passed[b], strict=True))
        only_b = sum(y and not x for x, y in zip(passed[a], passed[b], strict=True))
        print(json.dumps({"model_type": mt, "pair": f"{a} - {b}", "diff": round((only_a - only_b) / len(passed[a]), 3),
                          "only_first": only_a, "only_second": only_b, "p": round(mcnemar_exact(only_a, only_b), 4)}))


if __name__ == "__main__":
    main()
