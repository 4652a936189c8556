"""Provider-neutral training data for hosted fine-tuning, built from what the platform verified.

- SFT: the verified expert trajectories (the ``trajectories`` table), re-verified here so a row
  that no longer passes (rules changed since) never leaves the machine.
- Preference pairs: verifier-ranked samples per task; the best sample is ``chosen``, the worst
  ``rejected``, and a task only gives a pair when their verifier scores differ (same rule as the
  local DPO stage). Samples can come from a local policy; by default (``mutated_samples``) they
  are the expert spec broken by the domain's own ``mutate`` for each skill the task exercises,
  because sampling a local policy would need the ``gpu`` pool and this path must not hold it.
- Reinforcement: the policy prompt plus the task row the grader reads.

The prompts are the exact text the local policy sees (``prompts.task_prompt``), so a hosted model
is evaluated on the same prompts it was trained on. Also generic record checks shared by the
providers' ``validate_dataset``. No Dagster here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains.base import Domain, Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.paid.base import (ChatExample, DatasetFormatError, DatasetSource, PreferencePair,
                                  ReinforcementItem)
from srl_assets.prompts import task_prompt, trim_lore
from srl_assets.trajectory import FINAL_TITLE, format_step, parse_spec, parse_trajectory, spec_to_json

SYSTEM_PROMPT = ("You write game content specs. Answer with numbered steps `N. **Title** action`; "
                 "the last step, titled `Final spec`, is the JSON spec.")


def approx_tokens(records: Iterable[dict]) -> int:
    """≈ tokens of the JSONL (characters / 4). No provider tokenizer is available offline; the
    estimate errs high because JSON punctuation is counted, which is the safe side for a spend cap."""
    return sum((len(json.dumps(r, ensure_ascii=False)) + 3) // 4 for r in records)


def to_jsonl(records: Sequence[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_jsonl(records: Sequence[dict], path: Path) -> Path:
    """Atomic: written aside and renamed, so a reader never sees half a dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(to_jsonl(records))
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------- sources
def sft_examples(trajectory_rows: Sequence[dict], tasks: dict[str, Task], verifier: Verifier,
                 lore_k: int, system: str = SYSTEM_PROMPT) -> tuple[list[ChatExample], list[str]]:
    """One example per trajectory row that still passes the verifier; also the dropped task ids."""
    examples, dropped = [], []
    for row in trajectory_rows:
        task = tasks.get(row["task_id"])
        if task is None or not verifier.verify_trajectory(task, row["trajectory"]).passed:
            dropped.append(row["task_id"])
            continue
        prompt = task_prompt(row["prompt"], trim_lore(row.get("lore") or "", lore_k))
        examples.append(ChatExample(prompt=prompt, completion=row["trajectory"], system=system, task_id=row["task_id"]))
    return examples, dropped


def mutated_samples(domain: Domain, rules: Rules, task: Task, trajectory: str, seed: int = 0) -> list[str]:
    """The expert trajectory plus, per skill the task exercises, the same trajectory with its final
    spec broken by ``domain.mutate`` for that skill."""
    parsed = parse_trajectory(trajectory)
    if not parsed.ok:
        return [trajectory]
    spec, _ = parse_spec(parsed.steps[-1].action)
    if spec is None:
        return [trajectory]
    rng = random.Random(f"{seed}:{task.task_id}")
    head = [s.text for s in parsed.steps[:-1]]
    out = [trajectory]
    for skill in task.skills:
        broken = domain.mutate(skill, task.params, spec, rules, rng)
        out.append("\n".join([*head, format_step(len(head) + 1, FINAL_TITLE, spec_to_json(broken))]))
    return out


def preference_pairs(trajectory_rows: Sequence[dict], tasks: dict[str, Task], verifier: Verifier, lore_k: int,
                     samples_for: Callable[[Task, str], list[str]], min_margin: float = 0.0,
                     system: str = SYSTEM_PROMPT) -> list[PreferencePair]:
    """Per task: rank ``samples_for(task, expert_trajectory)`` by verifier score; best vs worst.
    Ties keep the sampling order (the first sample wins), so results are deterministic."""
    pairs = []
    for row in trajectory_rows:
        task = tasks.get(row["task_id"])
        if task is None:
            continue
        scored = [(verifier.verify_trajectory(task, s).score, s) for s in samples_for(task, row["trajectory"])]
        ranked = sorted(scored, key=lambda t: -t[0])
        (best_score, best), (worst_score, worst) = ranked[0], ranked[-1]
        if best_score - worst_score > min_margin:
            prompt = task_prompt(row["prompt"], trim_lore(row.get("lore") or "", lore_k))
            pairs.append(PreferencePair(prompt=prompt, chosen=best, rejected=worst, system=system,
                                        task_id=task.task_id))
    return pairs


def reinforcement_items(trajectory_rows: Sequence[dict], tasks: dict[str, Task], lore_k: int,
                        system: str = SYSTEM_PROMPT) -> list[ReinforcementItem]:
    items = []
    for row in trajectory_rows:
        task = tasks.get(row["task_id"])
        if task is not None:
            items.append(ReinforcementItem(prompt=task_prompt(row["prompt"], trim_lore(row.get("lore") or "", lore_k)),
                                           task=task.to_row(), system=system, task_id=task.task_id))
    return items


def build_source(model_type: str, trajectory_rows: Sequence[dict], tasks: Sequence[Task], domain: Domain,
                 rules: Rules, lore_k: int, seed: int = 0) -> tuple[DatasetSource, dict[str, Any]]:
    """All three kinds of data for one model type, plus counts for the UI."""
    verifier = Verifier(domain, rules)
    by_id = {t.task_id: t for t in tasks}
    sft, dropped = sft_examples(trajectory_rows, by_id, verifier, lore_k)
    kept = [r for r in trajectory_rows if r["task_id"] not in set(dropped)]
    prefs = preference_pairs(kept, by_id, verifier, lore_k,
                             lambda task, traj: mutated_samples(domain, rules, task, traj, seed))
    rl = reinforcement_items(kept, by_id, lore_k)
    source = DatasetSource(model_type, tuple(sft), tuple(prefs), tuple(rl))
    return source, {"sft_examples": len(sft), "preference_pairs": len(prefs), "reinforcement_items": len(rl),
                    "dropped_unverified": len(dropped)}


# --------------------------------------------------------------------------------- generic checks
def check_alternating_chat(provider: str, index: int, messages: Any, *, roles: tuple[str, str] = ("user", "assistant"),
                           system_role: str | None = "system", must_end_with: str | None = "assistant",
                           allowed_keys: frozenset[str] = frozenset({"role", "content"}),
                           content_key: str = "content") -> None:
    """Messages are a non-empty list of dicts; an optional leading system turn, then ``roles``
    alternating starting with the first; only ``allowed_keys``; non-empty text content."""
    if not isinstance(messages, list) or not messages:
        raise DatasetFormatError(provider, index, "messages must be a non-empty list")
    turns = messages
    if system_role and isinstance(turns[0], dict) and turns[0].get("role") == system_role:
        turns = turns[1:]
    if not turns:
        raise DatasetFormatError(provider, index, "no turn after the system message")
    for j, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DatasetFormatError(provider, index, f"message {j} must be an object")
        extra = set(m) - allowed_keys
        if extra:
            raise DatasetFormatError(provider, index, f"message {j} has keys not allowed here: {sorted(extra)}")
        content = m.get(content_key)
        if not (isinstance(content, str) and content.strip()) and not (isinstance(content, list) and content):
            raise DatasetFormatError(provider, index, f"message {j} has empty {content_key!r}")
    for j, m in enumerate(turns):
        want = roles[j % 2]
        if m.get("role") != want:
            raise DatasetFormatError(provider, index, f"roles must alternate {roles[0]}/{roles[1]} starting with "
                                     f"{roles[0]}; turn {j} is {m.get('role')!r}, expected {want!r}")
    if must_end_with and turns[-1].get("role") != must_end_with:
        raise DatasetFormatError(provider, index, f"the last turn must be {must_end_with!r}, "
                                 f"got {turns[-1].get('role')!r}")


def check_keys(provider: str, index: int, record: Any, required: set[str], allowed: set[str] | None = None) -> None:
    if not isinstance(record, dict):
        raise DatasetFormatError(provider, index, f"record must be a JSON object, got {type(record).__name__}")
    missing = required - set(record)
    if missing:
        raise DatasetFormatError(provider, index, f"missing keys {sorted(missing)}")
    if allowed is not None and set(record) - allowed:
        raise DatasetFormatError(provider, index, f"keys not allowed: {sorted(set(record) - allowed)}")


def check_size(provider: str, records: Sequence[dict], *, min_examples: int, max_examples: int | None = None,
               max_record_tokens: int | None = None, max_file_bytes: int | None = None) -> None:
    """Count and size limits; a too-small or too-large file names the rule (index -1 = whole file)."""
    if len(records) < min_examples:
        raise DatasetFormatError(provider, -1, f"needs at least {min_examples} examples, got {len(records)}")
    if max_examples is not None and len(records) > max_examples:
        raise DatasetFormatError(provider, -1, f"at most {max_examples} examples, got {len(records)}")
    if max_record_tokens is not None:
        for i, r in enumerate(records):
            n = approx_tokens([r])
            if n > max_record_tokens:
                raise DatasetFormatError(provider, i, f"≈{n} tokens, over the {max_record_tokens}-token limit per example")
    if max_file_bytes is not None and len(to_jsonl(records)) > max_file_bytes:
        raise DatasetFormatError(provider, -1, f"file is over {max_file_bytes} bytes")
