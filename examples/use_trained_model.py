"""Ask a trained model for a spec, then parse and verify it, as the evaluation does.

    .venv/bin/python examples/use_trained_model.py <checkpoint folder> plant \
        '{"family": "rosaceae", "biome": "grassland", "growth_form": "shrub", "ask_flowering": true}'

The checkpoint is any published folder (the `uri` in `rlvr_checkpoint`'s metadata); the params are
optional (one task is drawn from the rules without them).
"""

import argparse
import json
import random

from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import Task, task_id_of
from srl_assets.models.tiny import generate, load_model
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, strip_think
from srl_assets.rules_integration import RulesIntegration
from srl_assets.settings import policy_lore_k
from srl_assets.trajectory import parse_spec, parse_trajectory


def make_task(model_type, params, rules):
    """A task from params the caller chose, checked against the rules first."""
    domain = get_domain(model_type)
    domain.validate_params(params, rules)  # raises ParamsError naming the bad field
    return Task(task_id=task_id_of(model_type, params), model_type=model_type, split="eval",
                params=params, skills=tuple(domain.task_skills(params, rules)),
                prompt=domain.describe(params, rules), seed=0, rules_version=rules.version)


def read_spec(task, text, verifier):
    """The final spec the model wrote, and the verifier's verdict on the whole trajectory."""
    trajectory = parse_trajectory(strip_think(text))
    spec, error = parse_spec(trajectory.steps[-1].action) if trajectory.ok else (None, trajectory.errors[0])
    verdict = verifier.verify_trajectory(task, strip_think(text))
    return {"spec": spec, "error": error, **verdict.to_dict()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("model_type")
    parser.add_argument("params", nargs="?", help="task params as JSON (default: drawn from the rules)")
    args = parser.parse_args(argv)
    rules = RulesIntegration().load(args.model_type)
    params = (json.loads(args.params) if args.params
              else get_domain(args.model_type).sample_params(random.Random(0), rules))
    task = make_task(args.model_type, params, rules)
    [prompt] = policy_prompts([task], rules, policy_lore_k())  # the prompt the model was trained on
    model, tokenizer = load_model(args.checkpoint)
    [text] = generate(model, tokenizer, [prompt], max_new_tokens=TRAJECTORY_MAX_NEW_TOKENS)  # greedy, as evaluated
    result = read_spec(task, text, Verifier(get_domain(args.model_type), rules))
    print(json.dumps({"task": task.prompt, "output": text, **result}, indent=1))
    return result


if __name__ == "__main__":
    main()
