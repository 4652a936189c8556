"""Which step of the trajectory a published checkpoint gets wrong when every earlier step is right.

For each model type: ``--n`` fresh held-out tasks, the teacher's (ProceduralTeacher) verified
trajectory for each, and for every step k the prompt the policy sees at evaluation followed by the
expert's steps 1..k-1 (teacher forcing). The latest published ``--stage`` checkpoint greedy-decodes
one line; the line is compared with the expert's step k (exact match). The final spec written that
way is also verified: ``final spec passes`` is the pass rate when every reasoning step is the
expert's and only the final spec is the model's, against ``free run passes``, the pass rate of the
model's own whole trajectory on the same tasks.

    .venv/bin/python benchmarks/step_accuracy.py --home .dagster_home

Prints one table per model type and, with ``--json``, writes the numbers there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.failure_reasons import checkpoint  # noqa: E402
from srl_assets.collaboration.teacher_planner import ProceduralTeacher  # noqa: E402
from srl_assets.collaboration.verifier import Verifier  # noqa: E402
from srl_assets.domains import MODEL_TYPES, get_domain  # noqa: E402
from srl_assets.dynamic_example_generator import DynamicExampleGenerator  # noqa: E402
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, strip_think, task_prompt  # noqa: E402
from srl_assets.rules_integration import RulesIntegration  # noqa: E402
from srl_assets.trajectory import FINAL_TITLE, parse_trajectory  # noqa: E402


def first_line(text: str) -> str:
    stripped = strip_think(text).strip()
    return stripped.splitlines()[0].strip() if stripped else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".dagster_home"), help="the DAGSTER_HOME of a demo")
    parser.add_argument("--stage", default="base", choices=["base", "srl", "rlvr"])
    parser.add_argument("--model-types", nargs="+", default=list(MODEL_TYPES))
    parser.add_argument("--n", type=int, default=100, help="held-out tasks per model type")
    parser.add_argument("--seed", type=int, default=4242, help="seed of the held-out tasks")
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
        teacher = ProceduralTeacher(domain, rules)
        tasks = DynamicExampleGenerator(domain, rules).generate(args.n, "eval", args.seed)
        model, tokenizer = load_model(checkpoint(args.home, args.stage, model_type))
        expert_steps, prompts, keys = [], [], []  # keys: (task index, step index)
        for i, task in enumerate(tasks):
            parsed = parse_trajectory(teacher.plan(task, []))
            if not parsed.ok:
                raise SystemExit(f"{model_type}: the teacher's trajectory for task {i} does not parse: {parsed.errors}")
            expert_steps.append(parsed.steps)
            prompt = task_prompt(task.prompt, "")
            for k in range(len(parsed.steps)):
                prompts.append(prompt + "".join(step.text + "\n" for step in parsed.steps[:k]))
                keys.append((i, k))
        # The model writes on past step k (it was trained on whole trajectories); only its first line counts.
        lines_out = [first_line(t) for t in generate(model, tokenizer, prompts, max_new_tokens=256,
                                                     temperature=0.0, batch_size=64)]
        by_title: dict[str, list[bool]] = defaultdict(list)
        positions: dict[str, list[int]] = defaultdict(list)
        final_passes = 0
        for (i, k), line in zip(keys, lines_out, strict=True):
            expert = expert_steps[i][k]
            by_title[expert.title].append(line == expert.text)
            positions[expert.title].append(k)
            if expert.title == FINAL_TITLE:
                earlier = [step.text for step in expert_steps[i][:k]]
                final_passes += verifier.verify_trajectory(tasks[i], "\n".join([*earlier, line])).passed

        free = generate(model, tokenizer, [task_prompt(t.prompt, "") for t in tasks],
                        max_new_tokens=TRAJECTORY_MAX_NEW_TOKENS,
                        temperature=0.0, batch_size=50)
        free_passes = sum(verifier.verify_trajectory(t, strip_think(x)).passed for t, x in zip(tasks, free))
        # Titles by their mean place in the trajectory (some steps appear only in some tasks); the final spec last.
        titles = sorted(by_title, key=lambda title: (title == FINAL_TITLE, sum(positions[title]) / len(positions[title])))
        row = {"step_exact": {title: sum(by_title[title]) / len(by_title[title]) for title in titles},
               "final_spec_passes": final_passes / len(tasks), "free_run_passes": free_passes / len(tasks)}
        results[model_type] = row
        table = " | ".join(f"{title} {acc:.2f}" for title, acc in row["step_exact"].items())
        print(f"{model_type} ({args.stage}, {len(tasks)} tasks): step exact match given the expert's earlier "
              f"steps: {table}; final spec passes {row['final_spec_passes']:.2f} with expert reasoning, "
              f"free run passes {row['free_run_passes']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
