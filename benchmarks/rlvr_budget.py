"""How much RLVR does the embedded tiny default need to beat its base model?

Runs the RLVR stage (GRPO by default; ``--algorithm rft`` runs rejection-sampling fine-tuning) (the same child-process stage the `rlvr_checkpoint` asset runs) from the base
checkpoint that `make demo` published for one model type, on fresh train-split tasks, then greedy-
evaluates the base and the RLVR model on the same fresh held-out tasks. Not a test: minutes per run.

    make demo   # once: publishes base checkpoints under .dagster_home
    .venv/bin/python benchmarks/rlvr_budget.py plant --steps 100 --lr 4e-4
    .venv/bin/python benchmarks/rlvr_budget.py tree --steps 32 --lr 3e-4 --n-eval 200
    .venv/bin/python benchmarks/rlvr_budget.py tree --steps 48 --temperature 1.2 --eval-temperature 0.7
    .venv/bin/python benchmarks/rlvr_budget.py plant --algorithm rft --rft-prompts 320 --steps 150 --lr 1e-3

Its last lines are JSON: base and RLVR (pass rate, mean score on the held-out tasks; greedy, then
sampled at --eval-temperature when given), then the RLVR stage's steps, samples, wall time and the
policy's mean per-token entropy (as TRL logs it, at the rollout temperature) over its first and last
quarter of steps. TRL's per-step log lines come before them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from resources.duckdb_store import DuckDBStore
from srl_assets.assets.trajectories import load_tasks
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.prompts import task_prompt
from srl_assets.rlvr.rlvr_tasks import rlvr_tasks
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.rules_integration import RulesIntegration
from srl_assets.settings import duckdb_path
from srl_assets.training.stages import read_rows

from demo_home import base_checkpoint, run_stage_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_type")
    parser.add_argument("--algorithm", choices=["grpo", "rft"], default="grpo",
                        help="rft: --steps are fine-tuning steps per round, --lr its learning rate")
    parser.add_argument("--rft-prompts", type=int, default=320, help="rft: tasks sampled per round")
    parser.add_argument("--rft-samples", type=int, default=4, help="rft: samples per task")
    parser.add_argument("--rft-rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--n-tasks", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=0.7, help="rollout sampling temperature")
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient (0 = no reference model)")
    parser.add_argument("--eval-temperature", type=float, default=0.0,
                        help="> 0: also evaluate one sample per held-out task at this temperature")
    parser.add_argument("--n-eval", type=int, default=200, help="fresh held-out (eval-split) tasks")
    parser.add_argument("--eval-seed", type=int, default=12345)
    args = parser.parse_args()

    mt = args.model_type
    store = DuckDBStore(database=duckdb_path())
    base = base_checkpoint(store, mt)
    rules = RulesIntegration().load(mt)
    generator = DynamicExampleGenerator(get_domain(mt), rules)
    stored = load_tasks(store, mt, "train")
    seen = {t.task_id for t in stored}  # as the rlvr_checkpoint asset marks them: RFT samples fresh tasks first
    train, _ = rlvr_tasks(stored, generator, args.n_tasks, 0, seed=0)
    held_out = generator.generate(args.n_eval, "eval", args.eval_seed)

    with tempfile.TemporaryDirectory() as tmp:
        def stage(name: str, rows: list[dict], config: dict, model_path: str | None, folder_name: str = "") -> dict:
            return run_stage_in(Path(tmp) / (folder_name or name), name, mt, rows, config, model_path)

        t0 = time.perf_counter()
        rows = [{"prompt": task_prompt(t.prompt, ""), "task": task_column(t), "fresh": t.task_id not in seen}
                for t in train]
        if args.algorithm == "rft":
            config = {"algorithm": "rft", "rounds": args.rft_rounds, "prompts_per_round": args.rft_prompts,
                      "samples_per_prompt": args.rft_samples, "temperature": args.temperature,
                      "sft_steps": args.steps, "learning_rate": args.lr, "save_steps": args.steps}
        else:
            config = {"algorithm": "grpo", "max_steps": args.steps, "learning_rate": args.lr, "warmup_ratio": 0.1,
                      "prompts_per_step": args.prompts_per_step, "num_generations": args.num_generations,
                      "temperature": args.temperature, "beta": args.beta, "max_completion_length": 320,
                      "save_steps": args.steps}
        rlvr = stage("rlvr", rows, config, base)
        seconds = time.perf_counter() - t0
        eval_rows = [{"task": t.to_row(), "prompt": task_prompt(t.prompt, "")} for t in held_out]
        temperatures = [0.0] + ([args.eval_temperature] if args.eval_temperature > 0 else [])
        results = []
        for temperature in temperatures:
            found = stage("evaluate", eval_rows, {"candidates": {"base": base, "rlvr": rlvr["out_dir"]},
                                                  "temperature": temperature, "seed": 0}, None, f"evaluate-{temperature}")
            results.append((temperature, read_rows(Path(found["out_dir"]) / "records.jsonl")))
    for temperature, records in results:
        for candidate in ("base", "rlvr"):
            mine = [r for r in records if r["candidate"] == candidate]
            print(json.dumps({"model_type": mt, "candidate": candidate, "eval_temperature": temperature,
                              "n": len(mine), "pass_rate": round(sum(r["passed"] for r in mine) / len(mine), 3),
                              "mean_score": round(sum(r["score"] for r in mine) / len(mine), 3)}))
    # GRPO logs the rollouts' entropy; RFT's SFT logs the entropy on its kept samples, which says less.
    entropy = [row["entropy"] for row in rlvr.get("log", []) if "entropy" in row] if args.algorithm == "grpo" else []
    quarter = max(1, len(entropy) // 4)
    samples = (args.rft_rounds * args.rft_prompts * args.rft_samples if args.algorithm == "rft"
               else args.steps * args.prompts_per_step * args.num_generations)
    print(json.dumps({"algorithm": args.algorithm, "rlvr_steps": args.steps, "samples": samples,
                      "kept": rlvr.get("kept"),
                      "rlvr_seconds": round(seconds), "rollout_temperature": args.temperature,
                      "entropy_first_quarter": round(sum(entropy[:quarter]) / quarter, 4) if entropy else None,
                      "entropy_last_quarter": round(sum(entropy[-quarter:]) / quarter, 4) if entropy else None}))


if __name__ == "__main__":
    main()
