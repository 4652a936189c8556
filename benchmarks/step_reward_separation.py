"""How well each registered SRL step reward tells a right step from a wrong one, on real trajectories.

For each model type: ``--n`` fresh tasks from the DynamicExampleGenerator, the ProceduralTeacher's
expert trajectory for each (what the ``trajectories`` asset stores), and for every expert step a
set of written variants, each scored with ``score_step`` (the bare step line, no think block):

* right: ``copy`` (the expert's step), ``reworded`` (the same facts written differently: for the
  JSON spec, keys shuffled and compact separators; for a text step, function words and punctuation
  changed: "so"->"thus", "the"->"a", "; "->", ", no final period, lower-case first letter) and, for
  text steps, ``synonym`` (one content word that states no fact swapped: "use"->"take",
  "holds"->"contains", "middle"->"midpoint"...). ``field`` ignores what ``reworded`` changes by
  construction; ``synonym`` is the rewording it cannot see through;
* wrong: ``number`` (one number changed by 10-25% or +-1..2), ``categorical`` (one value of the
  domain's own vocabulary, collected from the final specs, replaced by another of the same field:
  another biome, emotion, species...), ``dropped`` (one JSON key, or one clause of a text step,
  left out) and ``truncated`` (the step cut at 30-80% of its action).

Per reward and type it prints the mean score of each variant kind, the separation (mean of the copy
minus mean of all wrong variants), ``AUC step`` (over pairs of a right and a wrong variant of the
SAME expert step, the probability that the right one scores higher, ties half: what a GRPO group
compares), ``AUC synonym`` (the same with only the synonym variant on the right side: the rewording
no reward here normalizes away) and ``AUC pooled`` (over all pairs of the type: one threshold for
every step).

    .venv/bin/python benchmarks/step_reward_separation.py            # all seven types, 30 tasks each
    .venv/bin/python benchmarks/step_reward_separation.py --n 10 --model-types plant --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srl_assets.collaboration.teacher_planner import ProceduralTeacher  # noqa: E402
from srl_assets.domains import MODEL_TYPES, get_domain  # noqa: E402
from srl_assets.dynamic_example_generator import DynamicExampleGenerator  # noqa: E402
from srl_assets.rules_integration import RulesIntegration  # noqa: E402
from srl_assets.srl.step_reward import STEP_REWARDS, score_step  # noqa: E402
from srl_assets.trajectory import Step, format_step, parse_trajectory, spec_to_json  # noqa: E402

RIGHT = ("copy", "reworded", "synonym")
WRONG = ("number", "categorical", "dropped", "truncated")
NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")


def expert_trajectories(model_type: str, n: int, seed: int) -> list[list[Step]]:
    rules = RulesIntegration().load(model_type)
    domain = get_domain(model_type)
    teacher = ProceduralTeacher(domain, rules)
    out = []
    for task in DynamicExampleGenerator(domain, rules).generate(n, "train", seed):
        parsed = parse_trajectory(teacher.plan(task, []))
        if not parsed.ok:
            raise SystemExit(f"{model_type}: the teacher's trajectory does not parse: {parsed.errors}")
        out.append(parsed.steps)
    return out


def spec_of(step: Step) -> dict[str, Any] | None:
    if not step.action.startswith("{"):
        return None
    value = json.loads(step.action)
    return value if isinstance(value, dict) else None


def vocabulary(trajectories: list[list[Step]]) -> dict[str, list[str]]:
    """Every non-numeric string value of the final specs, by the field (leaf key) it fills."""
    vocab: dict[str, set[str]] = defaultdict(set)

    def walk(value: Any, key: str) -> None:
        if isinstance(value, str) and not NUMBER_RE.fullmatch(value):
            vocab[key].add(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)

    for steps in trajectories:
        spec = spec_of(steps[-1])
        if spec:
            walk(spec, "")
    return {key: sorted(values) for key, values in vocab.items() if len(values) > 1}


def perturb_number(value: float, decimals: int, rng: random.Random) -> float:
    """A plausible wrong result: off by 10-25% (or by 1-2 units of the last digit), never equal."""
    unit = 10.0 ** -decimals
    new = round(value * rng.choice([0.75, 0.9, 1.1, 1.25]), decimals)
    if new == value:
        new = round(value + rng.choice([-2, -1, 1, 2]) * unit, decimals)
    return new if decimals else int(new)


def number_text(text: str, rng: random.Random) -> str | None:
    matches = list(NUMBER_RE.finditer(text))
    if not matches:
        return None
    m = rng.choice(matches)
    decimals = len(m.group().split(".")[1]) if "." in m.group() else 0
    new = perturb_number(float(m.group()), decimals, rng)
    return text[: m.start()] + (f"{new:.{decimals}f}" if decimals else str(new)) + text[m.end():]


def leaf_paths(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*path, i))]
    return [(path, value)]


def set_path(spec: Any, path: tuple, new: Any) -> Any:
    spec = json.loads(json.dumps(spec))
    target = spec
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return spec


def leaf_key(path: tuple) -> str:
    return next((p for p in reversed(path) if isinstance(p, str)), "")


def json_variants(step: Step, spec: dict[str, Any], vocab: dict[str, list[str]],
                  rng: random.Random) -> dict[str, str]:
    def render(new_spec: dict[str, Any]) -> str:
        return format_step(step.number, step.title, spec_to_json(new_spec))

    keys = list(spec)
    rng.shuffle(keys)
    out = {"reworded": format_step(step.number, step.title,
                                   json.dumps({k: spec[k] for k in keys}, separators=(",", ":")))}
    leaves = leaf_paths(spec)
    numeric = [(p, v) for p, v in leaves if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numeric:
        path, value = rng.choice(numeric)
        decimals = len(repr(float(value)).split(".")[1]) if isinstance(value, float) else 0
        out["number"] = render(set_path(spec, path, perturb_number(value, decimals, rng)))
    categorical = [(p, v) for p, v in leaves if isinstance(v, str) and leaf_key(p) in vocab]
    if categorical:
        path, value = rng.choice(categorical)
        out["categorical"] = render(set_path(spec, path, rng.choice([x for x in vocab[leaf_key(path)] if x != value])))
    if len(spec) > 1:
        dropped = rng.choice(list(spec))
        out["dropped"] = render({k: v for k, v in spec.items() if k != dropped})
    return out


FUNCTION_WORD_SWAPS = [(r"\bso\b", "thus"), (r"\bthe\b", "a"), (r"\bThe\b", "A"), (r"; ", ", ")]
# Same fact, another content word: what a rewording that no reward can see through looks like.
SYNONYMS = {"use": "take", "take": "use", "gives": "yields", "give": "yield", "has": "shows", "holds": "contains",
            "spans": "covers", "grows": "reaches", "means": "denotes", "needs": "requires", "shows": "displays",
            "serves": "supports", "adds": "includes", "middle": "midpoint", "rest": "others", "put": "place",
            "opens": "leads", "is": "equals", "at": "with", "with": "at"}
WORD = r"(?<![\w-]){}(?![\w-])"  # a whole word: "green" is not in "silver-green"


def text_variants(step: Step, vocab: dict[str, list[str]], rng: random.Random) -> dict[str, str]:
    action = step.action
    reworded = action
    for pattern, repl in FUNCTION_WORD_SWAPS:
        reworded = re.sub(pattern, repl, reworded)
    reworded = reworded.rstrip(".")
    if reworded[1:2].islower():  # "The" -> "the", but "EMFACS" stays
        reworded = reworded[:1].lower() + reworded[1:]
    out = {"reworded": format_step(step.number, step.title, reworded)}
    swaps = [w for w in SYNONYMS if re.search(WORD.format(w), action)]
    if swaps:
        word = rng.choice(swaps)
        out["synonym"] = format_step(step.number, step.title, re.sub(WORD.format(word), SYNONYMS[word], action, count=1))
    number = number_text(action, rng)
    if number is not None:
        out["number"] = format_step(step.number, step.title, number)
    found = []
    for key, values in vocab.items():
        for value in values:
            for form in {value, value.replace("_", " ")}:
                flags = re.IGNORECASE if len(form) > 2 else 0
                if re.search(WORD.format(re.escape(form)), action, flags):
                    found.append((key, value, form, flags))
    if found:
        key, value, form, flags = rng.choice(found)
        other = rng.choice([x for x in vocab[key] if x != value])
        other = other.replace("_", " ") if form != value else other

        def same_case(m: re.Match) -> str:
            return other[:1].upper() + other[1:] if m.group()[:1].isupper() else other

        out["categorical"] = format_step(step.number, step.title,
                                         re.sub(WORD.format(re.escape(form)), same_case, action, flags=flags))
    clauses = re.split(r"(?<=[;,]) ", action)
    if len(clauses) > 1:
        drop = rng.randrange(len(clauses))
        kept = [c for i, c in enumerate(clauses) if i != drop]
        out["dropped"] = format_step(step.number, step.title, " ".join(kept).rstrip(";,.") + ("." if action.endswith(".") else ""))
    return out


def variants(step: Step, vocab: dict[str, list[str]], rng: random.Random) -> dict[str, str]:
    spec = spec_of(step)
    out = {"copy": step.text, **(json_variants(step, spec, vocab, rng) if spec is not None
                                 else text_variants(step, vocab, rng))}
    cut = max(1, int(len(step.action) * rng.uniform(0.3, 0.8)))
    short = step.action[:cut]
    if spec is None and " " in short:
        short = short.rsplit(" ", 1)[0]  # a text step stops at a word; a JSON one anywhere
    out["truncated"] = format_step(step.number, step.title, short)
    return {kind: text for kind, text in out.items() if kind == "copy" or text != step.text}


def auc(right: list[float], wrong: list[float]) -> tuple[float, int]:
    """Wins of right over wrong (ties half), and the number of pairs."""
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins, len(right) * len(wrong)


def pooled_auc(right: list[float], wrong: list[float]) -> float:
    import numpy as np

    r, w = np.asarray(right)[:, None], np.asarray(wrong)[None, :]
    return float(((r > w).sum() + 0.5 * (r == w).sum()) / (r.size * w.size))


def measure(model_type: str, n: int, seed: int, rewards: list[str]) -> dict[str, dict[str, Any]]:
    trajectories = expert_trajectories(model_type, n, seed)
    vocab = vocabulary(trajectories)
    rng = random.Random(seed)
    cases = []  # (expert step, step kind, {variant kind: text})
    for steps in trajectories:
        for step in steps:
            cases.append((step.text, "json" if spec_of(step) is not None else "text", variants(step, vocab, rng)))
    results: dict[str, dict[str, Any]] = {}
    for reward in rewards:
        scores: dict[str, list[float]] = defaultdict(list)
        by_kind: dict[str, dict[str, list[float]]] = {"json": defaultdict(list), "text": defaultdict(list)}
        wins = pairs = syn_wins = syn_pairs = 0.0
        started = time.perf_counter()
        calls = 0
        for expert, step_kind, texts in cases:
            right, wrong = [], []
            for kind, text in texts.items():
                score = score_step(text, expert, reward)
                calls += 1
                if score < 0:
                    raise SystemExit(f"{model_type}: variant {kind!r} broke the step format: {text[:80]!r}")
                scores[kind].append(score)
                by_kind[step_kind][kind].append(score)
                (right if kind in RIGHT else wrong).append(score)
            w, p = auc(right, wrong)
            wins, pairs = wins + w, pairs + p
            if "synonym" in texts:
                w, p = auc([score_step(texts["synonym"], expert, reward)], wrong)
                syn_wins, syn_pairs = syn_wins + w, syn_pairs + p
        elapsed = time.perf_counter() - started
        all_right = [s for k in RIGHT for s in scores[k]]
        all_wrong = [s for k in WRONG for s in scores[k]]
        mean = {k: sum(v) / len(v) for k, v in scores.items()}
        results[reward] = {
            "mean": mean, "n": {k: len(v) for k, v in scores.items()},
            "separation": mean["copy"] - sum(all_wrong) / len(all_wrong),
            "auc_step": wins / pairs, "auc_pooled": pooled_auc(all_right, all_wrong),
            "auc_synonym": syn_wins / syn_pairs if syn_pairs else float("nan"),
            "us_per_call": 1e6 * elapsed / calls,
            "by_step_kind": {sk: {k: v for k, v in d.items()} for sk, d in by_kind.items()},
        }
    return results


def fmt(mean: dict[str, float], kind: str) -> str:
    return f"{mean[kind]:.3f}" if kind in mean else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-types", nargs="+", default=list(MODEL_TYPES))
    parser.add_argument("--n", type=int, default=30, help="tasks (expert trajectories) per model type")
    parser.add_argument("--seed", type=int, default=2510)
    parser.add_argument("--rewards", nargs="+", default=STEP_REWARDS.names())
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    results = {mt: measure(mt, args.n, args.seed, args.rewards) for mt in args.model_types}
    kinds = [*RIGHT, *WRONG]
    print(f"Step-reward separation: {args.n} expert trajectories per type (seed {args.seed}), "
          "every step and its variants scored with score_step.\n")
    print("| reward | type | " + " | ".join(kinds) + " | separation | AUC step | AUC synonym | AUC pooled | us/call |")
    print("|---|---|" + "---:|" * (len(kinds) + 5))
    for reward in args.rewards:
        for mt in args.model_types:
            r = results[mt][reward]
            print(f"| {reward} | {mt} | " + " | ".join(fmt(r["mean"], k) for k in kinds)
                  + f" | {r['separation']:.3f} | {r['auc_step']:.3f} | {r['auc_synonym']:.3f} | {r['auc_pooled']:.3f}"
                  f" | {r['us_per_call']:.0f} |")

    # The same, pooled over the types, split by step kind: JSON spec steps against text steps.
    print("\n| reward | step | " + " | ".join(kinds) + " | separation |")
    print("|---|---|" + "---:|" * (len(kinds) + 1))
    for reward in args.rewards:
        for step_kind in ("text", "json"):
            pooled: dict[str, list[float]] = defaultdict(list)
            for mt in args.model_types:
                for kind, values in results[mt][reward]["by_step_kind"][step_kind].items():
                    pooled[kind].extend(values)
            mean = {k: sum(v) / len(v) for k, v in pooled.items() if v}
            wrong = [s for k in WRONG for s in pooled[k]]
            sep = mean["copy"] - sum(wrong) / len(wrong)
            print(f"| {reward} | {step_kind} | " + " | ".join(fmt(mean, k) for k in kinds) + f" | {sep:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({mt: {rw: {k: v for k, v in r.items() if k != "by_step_kind"}
                                              for rw, r in res.items()} for mt, res in results.items()}, indent=1))


if __name__ == "__main__":
    main()
