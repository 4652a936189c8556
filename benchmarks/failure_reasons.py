"""What a published checkpoint gets wrong on held-out tasks, by the Verifier's own reasons.

For each model type: greedy-decode ``--n`` fresh held-out tasks with the latest published checkpoint
of ``--stage`` and count the failed constraints whose reason says the spec contradicts the task's own
words (the Verifier's "X is ..., task asks ..." failures: a value the task states, written wrong in
the final spec), against all failed constraints. With ``--samples K``, each such failure's task is
also sampled K times at ``--temperature``: how often a sample gets that constraint right is the
signal a GRPO group of K could learn from.

    .venv/bin/python benchmarks/failure_reasons.py --home .dagster_home --samples 8

Prints one line per model type and, with ``--json``, writes the numbers there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from srl_assets.collaboration.verifier import Verifier  # noqa: E402
from srl_assets.domains import MODEL_TYPES, get_domain  # noqa: E402
from srl_assets.dynamic_example_generator import DynamicExampleGenerator  # noqa: E402
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, strip_think, task_prompt  # noqa: E402
from srl_assets.rules_integration import RulesIntegration  # noqa: E402

CONTRADICTS_TASK = "task asks"


def checkpoint(home: Path, stage: str, model_type: str) -> str:
    """The local folder of the latest published ``stage`` checkpoint, from the demo's checkpoint catalog."""
    from resources.duckdb_store import DuckDBStore
    from srl_assets.assets.training_support import latest_checkpoint

    database = home / "srl.duckdb"
    if not database.is_file():
        raise SystemExit(f"{database} not found: run `make demo` first, or pass --home")
    try:
        row = latest_checkpoint(DuckDBStore(database=str(database)), stage, model_type)
    except LookupError as exc:
        raise SystemExit(f"{exc} (run `make demo` first, or pass --home)") from None
    return row["uri"].removeprefix("file://")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".dagster_home"), help="the DAGSTER_HOME of a demo")
    parser.add_argument("--stage", default="base", choices=["base", "srl", "rlvr"])
    parser.add_argument("--model-types", nargs="+", default=list(MODEL_TYPES))
    parser.add_argument("--n", type=int, default=100, help="held-out tasks per model type")
    parser.add_argument("--seed", type=int, default=4242, help="seed of the held-out tasks")
    parser.add_argument("--samples", type=int, default=0, help="samples per contradicted task (0 = none)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from srl_assets.models.tiny import generate, load_model

    torch.set_num_threads(args.threads)
    results = {}
    for model_type in args.model_types:
        rules = RulesIntegration().load(model_type)
        domain = get_domain(model_type)
        verifier = Verifier(domain, rules)
        tasks = DynamicExampleGenerator(domain, rules).generate(args.n, "eval", args.seed)
        prompts = [task_prompt(t.prompt, "") for t in tasks]
        model, tokenizer = load_model(checkpoint(args.home, args.stage, model_type))
        texts = generate(model, tokenizer, prompts, max_new_tokens=TRAJECTORY_MAX_NEW_TOKENS, temperature=0.0,
                         batch_size=50)
        failed, contradicted, reasons = 0, [], Counter()
        for i, (task, text) in enumerate(zip(tasks, texts)):
            for failure in verifier.verify_trajectory(task, strip_think(text)).failures:
                if failure.skill not in task.skills:
                    continue
                failed += 1
                reasons[(failure.skill, re.sub(r"'[^']*'|-?\d[\d.]*", "_", failure.reason))] += 1
                if CONTRADICTS_TASK in failure.reason:
                    contradicted.append((i, failure.skill))
        row = {"failed_constraints": failed, "contradict_task": len(contradicted),
               "top_reasons": [[skill, reason, count] for (skill, reason), count in reasons.most_common(4)]}
        line = (f"{model_type}: {failed} failed constraints on {args.n} tasks, {len(contradicted)} "
                f"({len(contradicted) / max(failed, 1):.0%}) contradict the task's own words")
        if args.samples and contradicted:
            idx = sorted({i for i, _ in contradicted})
            k = args.samples
            sampled = generate(model, tokenizer, [prompts[i] for i in idx for _ in range(k)],
                               max_new_tokens=TRAJECTORY_MAX_NEW_TOKENS,
                               temperature=args.temperature, batch_size=64, seed=1)
            by_task = {i: sampled[j * k:(j + 1) * k] for j, i in enumerate(idx)}
            right = [sum(skill not in {f.skill for f in verifier.verify_trajectory(tasks[i], strip_think(s)).failures}
                         for s in by_task[i]) for i, skill in contradicted]
            row.update(sample_right=sum(right) / (k * len(right)), any_sample_right=sum(r > 0 for r in right) / len(right))
            line += (f"; a sample at T={args.temperature} gets such a constraint right {row['sample_right']:.0%} of "
                     f"the time, at least one of {k} for {row['any_sample_right']:.0%}")
        print(line, flush=True)
        results[model_type] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
