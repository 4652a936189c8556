"""Provider-neutral training data for hosted fine-tuning, built from what the platform verified.

- SFT: the verified expert trajectories (the ``trajectories`` table), re-verified here so a row
  that no longer passes (rules changed since) never leaves the machine.
- Preference pairs (``policy_preference_pairs``): k samples per task from the partition's local
  policy (the RLVR checkpoint), ranked by the Verifier; a passing sample is ``chosen`` (the verified
  expert trajectory when no sample passes, said so in the pair's metadata) and the lowest-scoring
  failing sample ``rejected``; a task whose samples give no contrast gives no pair. So the hosted
  model is pushed away from the mistakes the local policy actually makes. Fallback, only when asked
  for (no local checkpoint yet): ``mutated_preference_pairs``, the expert trajectory against copies
  whose final spec the domain's own ``mutate`` broke for each skill the task exercises.
- Reinforcement: the policy prompt plus the task row the grader reads.

The prompts are the exact text the local policy sees (``prompts.task_prompt``), so a hosted model
is evaluated on the same prompts it was trained on; the user message is that raw text, which a local
instruct checkpoint's chat template wraps the same way (``srl_assets.prompt_contract``). Also generic
record checks shared by the providers' ``validate_dataset``. No Dagster here.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains.base import Domain, Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.paid.base import (ChatExample, DatasetFormatError, DatasetSource, PreferencePair,
                                  ReinforcementItem)
from srl_assets.prompt_contract import DEFAULT_SYSTEM
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, strip_think, task_prompt, trim_lore
from srl_assets.trajectory import FINAL_TITLE, format_step, parse_spec, parse_trajectory, spec_to_json

# The system turn a local instruct checkpoint's prompt contract uses too: one contract, local and hosted.
SYSTEM_PROMPT = DEFAULT_SYSTEM


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


@dataclass(frozen=True)
class RankedPair(PreferencePair):
    """A preference pair plus where its two sides came from. The providers build their records from
    the base fields only (their formats allow no extra keys), so ``metadata`` never leaves the machine;
    ``paid_finetune_jobs`` writes it beside the datasets."""

    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def mutated_preference_pairs(trajectory_rows: Sequence[dict], tasks: dict[str, Task], verifier: Verifier,
                             lore_k: int, samples_for: Callable[[Task, str], list[str]], min_margin: float = 0.0,
                             system: str = SYSTEM_PROMPT) -> list[RankedPair]:
    """The fallback without a local policy: per task, rank ``samples_for(task, expert_trajectory)``
    (``mutated_samples``: the expert and its broken copies) by verifier score; best vs worst.
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
            pairs.append(RankedPair(prompt=prompt, chosen=best, rejected=worst, system=system, task_id=task.task_id,
                                    metadata={"chosen_from": "expert_trajectory", "rejected_from": "mutated_copy",
                                              "chosen_score": best_score, "rejected_score": worst_score}))
    return pairs


@dataclass(frozen=True)
class PolicyPairStats:
    """What sampling the policy gave, for the materialization's metadata."""

    tasks: int = 0
    samples: int = 0
    passing_samples: int = 0
    pairs: int = 0
    chosen_from_expert: int = 0
    skipped_no_contrast: int = 0
    skipped_task_ids: tuple[str, ...] = ()

    def as_metadata(self) -> dict[str, Any]:
        return {"policy_tasks": self.tasks, "policy_samples": self.samples,
                "policy_sample_pass_rate": round(self.passing_samples / self.samples, 4) if self.samples else 0.0,
                "preference_pairs_expert_chosen": self.chosen_from_expert,
                "preference_skipped_no_contrast": self.skipped_no_contrast}


def policy_preference_pairs(tasks: Sequence[Task], prompts: Sequence[str], samples: Sequence[Sequence[str]],
                            verifier: Verifier, expert: Mapping[str, str],
                            system: str = SYSTEM_PROMPT) -> tuple[list[RankedPair], PolicyPairStats]:
    """Pairs from a local policy's samples (``samples[i]``: the k completions of ``prompts[i]``).

    Each sample is scored after ``strip_think`` (as evaluation does), and the stripped text is what a
    pair carries, like the SFT completions. ``chosen``: the first best-scoring passing sample, else
    the task's verified expert trajectory (``expert[task_id]``, re-verified). ``rejected``: the
    lowest-scoring failing sample (the first on ties); a blank sample is never one (every provider
    refuses an empty completion). A task with no such two sides (every sample passed, or no failing
    sample with text, or nothing passing at all) is skipped and counted.
    """
    if not (len(tasks) == len(prompts) == len(samples)):
        raise ValueError(f"{len(tasks)} tasks, {len(prompts)} prompts and {len(samples)} sample lists: "
                         "one of each per task")
    pairs, skipped, n_samples, n_passing, from_expert = [], [], 0, 0, 0
    for task, prompt, raw in zip(tasks, prompts, samples):
        scored = []
        for i, text in enumerate(strip_think(s) for s in raw):
            verdict = verifier.verify_trajectory(task, text)
            scored.append((verdict.passed, verdict.score, i, text))
        n_samples += len(scored)
        passing = sorted((t for t in scored if t[0]), key=lambda t: (-t[1], t[2]))
        failing = sorted((t for t in scored if not t[0] and t[3].strip()), key=lambda t: (t[1], t[2]))
        n_passing += len(passing)
        chosen, chosen_from, chosen_score = None, "", 0.0
        if passing:
            chosen, chosen_from, chosen_score = passing[0][3], "policy_sample", passing[0][1]
        elif task.task_id in expert:
            verdict = verifier.verify_trajectory(task, expert[task.task_id])
            if verdict.passed:
                chosen, chosen_from, chosen_score = expert[task.task_id], "expert_trajectory", verdict.score
        if chosen is None or not failing:
            skipped.append(task.task_id)
            continue
        from_expert += chosen_from == "expert_trajectory"
        _, worst_score, worst_index, worst = failing[0]
        pairs.append(RankedPair(prompt=prompt, chosen=chosen, rejected=worst, system=system, task_id=task.task_id,
                                metadata={"chosen_from": chosen_from, "rejected_from": "policy_sample",
                                          "chosen_score": chosen_score, "rejected_score": worst_score,
                                          "rejected_sample": worst_index, "samples": len(scored),
                                          "passing_samples": len(passing)}))
    return pairs, PolicyPairStats(len(tasks), n_samples, n_passing, len(pairs), from_expert, len(skipped),
                                  tuple(skipped))


def sample_policy(model_path: str, prompts: Sequence[str], k: int, temperature: float,
                  max_new_tokens: int = TRAJECTORY_MAX_NEW_TOKENS, batch_size: int = 16,
                  seed: int = 0) -> list[list[str]]:
    """``k`` completions per prompt from a local checkpoint, on CPU (the caller's process; no GPU is
    held for this), seeded so a retried run draws the same samples."""
    from srl_assets.models.tiny import generate, load_model  # torch only where sampling happens

    if k < 1 or temperature <= 0:
        raise ValueError(f"sampling needs k >= 1 and temperature > 0 (k copies at temperature 0 are one "
                         f"greedy answer), got k={k}, temperature={temperature}")
    model, tokenizer = load_model(model_path, device="cpu")
    flat = generate(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens=max_new_tokens,
                    temperature=temperature, batch_size=batch_size, seed=seed)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def pairs_from_policy(trajectory_rows: Sequence[dict], tasks: Sequence[Task], domain: Domain, rules: Rules,
                      lore_k: int, sampler: Callable[[list[str]], Sequence[Sequence[str]]], max_tasks: int,
                      system: str = SYSTEM_PROMPT) -> tuple[list[RankedPair], PolicyPairStats]:
    """``policy_preference_pairs`` for the first ``max_tasks`` tasks whose expert trajectory still
    passes, on the prompts evaluation uses (``policy_prompts``); ``sampler(prompts)`` gives the k
    samples per prompt (``sample_policy`` on a checkpoint, or a scripted one in tests)."""
    from srl_assets.collaboration.lore_retriever import policy_prompts

    verifier = Verifier(domain, rules)
    by_id = {t.task_id: t for t in tasks}
    expert = {r["task_id"]: r["trajectory"] for r in trajectory_rows
              if r["task_id"] in by_id and verifier.verify_trajectory(by_id[r["task_id"]], r["trajectory"]).passed}
    ids = list(dict.fromkeys(r["task_id"] for r in trajectory_rows if r["task_id"] in expert))[:max_tasks]
    chosen_tasks = [by_id[i] for i in ids]
    prompts = policy_prompts(chosen_tasks, rules, lore_k)
    samples = sampler(prompts) if prompts else []
    return policy_preference_pairs(chosen_tasks, prompts, samples, verifier, expert, system)


def pair_provenance(pairs: Sequence[PreferencePair], checkpoint_sha256: str | None = None) -> list[dict[str, Any]]:
    """One row per pair (task id, where each side came from, scores) for the file beside the datasets."""
    rows = []
    for p in pairs:
        meta = dict(getattr(p, "metadata", {}) or {})
        rows.append({"task_id": p.task_id, **meta, **({"checkpoint_sha256": checkpoint_sha256}
                                                      if checkpoint_sha256 else {})})
    return rows


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
                 rules: Rules, lore_k: int, seed: int = 0,
                 preference: Sequence[PreferencePair] | None = None) -> tuple[DatasetSource, dict[str, Any]]:
    """All three kinds of data for one model type, plus counts for the UI.

    ``preference``: pairs built by the caller (``policy_preference_pairs``; ``paid_finetune_jobs``
    passes them, or none when no job needs them). None builds the mutated-copy pairs, for callers
    with no policy at hand (the providers' format tests)."""
    verifier = Verifier(domain, rules)
    by_id = {t.task_id: t for t in tasks}
    sft, dropped = sft_examples(trajectory_rows, by_id, verifier, lore_k)
    kept = verified_rows(trajectory_rows, dropped)
    if preference is None:
        preference = mutated_preference_pairs(kept, by_id, verifier, lore_k,
                                              lambda task, traj: mutated_samples(domain, rules, task, traj, seed))
    rl = reinforcement_items(kept, by_id, lore_k)
    source = DatasetSource(model_type, tuple(sft), tuple(preference), tuple(rl))
    return source, {"sft_examples": len(sft), "preference_pairs": len(preference), "reinforcement_items": len(rl),
                    "dropped_unverified": len(dropped)}


def verified_rows(trajectory_rows: Sequence[dict], dropped: Sequence[str]) -> list[dict]:
    gone = set(dropped)
    return [r for r in trajectory_rows if r["task_id"] not in gone]


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
