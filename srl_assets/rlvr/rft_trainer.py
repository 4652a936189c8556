"""RFTTrainer: rejection-sampling fine-tuning (expert iteration), reward = the Verifier's verdict.

Each round the policy samples several trajectories per training task, the Verifier scores them, and
the policy is fine-tuned (TRL ``SFTTrainer``, loss on the completion only) on the best sample of
every task that reaches ``min_score`` (1.0: it passes). It is RL with a binary verifiable reward:
ReST-EM (Singh et al., 2023, "Beyond Human Data") shows it is EM on the expected reward, and RFT
(Yuan et al., 2023) and STaR (Zelikman et al., 2022) use it on maths. No expert trajectory is used:
the policy learns only from what it wrote itself and the Verifier accepted.

Why it is here: on the tiny CPU default, GRPO moves the held-out pass rate by noise in the minutes
the demo has (README, Results). RFT spends the same minutes differently: decoding alone (no
backward pass) for many tasks, then likelihood steps on only the verified samples of fresh tasks,
which the warm start never saw.

Resume: a round's samples are written atomically (``round-<r>/samples.jsonl``) before fine-tuning,
and the fine-tuning writes Trainer checkpoints; a retried op reuses the samples and resumes the
fine-tuning from its last checkpoint. A finished round that another round follows leaves its model
in ``round-<r>/model`` (written aside, then renamed).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from srl_assets.collaboration.verifier import Verifier
from srl_assets.models.tiny import generate, load_model, save_model
from srl_assets.prompts import strip_think
from srl_assets.rlvr.verifier_reward import parse_task_column
from srl_assets.training.configs import RFTConfig
from srl_assets.training.grpo_common import MetricsCallback, resume_point
from srl_assets.training.stages import read_rows, write_rows


@dataclass(frozen=True)
class VerifiedSample:
    task: int  # index of the task in the round's task list
    prompt: str
    completion: str
    score: float
    passed: bool
    format_ok: bool = True  # the Verifier could read the trajectory and its spec had the type's schema


def select_samples(samples: list[VerifiedSample], min_score: float) -> list[VerifiedSample]:
    """Per task, the best-scored sample whose score is at least ``min_score`` (the first drawn wins a
    tie); a task none of whose samples reaches it contributes nothing. Order: by task.

    >>> s = [VerifiedSample(0, "p", "a", 0.5, False), VerifiedSample(0, "p", "b", 1.0, True)]
    >>> [x.completion for x in select_samples(s, 1.0)]
    ['b']
    """
    best: dict[int, VerifiedSample] = {}
    for sample in samples:
        if sample.score >= min_score and (sample.task not in best or sample.score > best[sample.task].score):
            best[sample.task] = sample
    return [best[t] for t in sorted(best)]


def order_rows(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Training rows with fresh tasks first (rows marked ``"fresh": false`` are tasks the warm start
    may have been fine-tuned on: resampling them teaches little), each part shuffled by ``seed``."""
    rng = random.Random(seed)
    fresh = [r for r in rows if r.get("fresh", True)]
    seen = [r for r in rows if not r.get("fresh", True)]
    rng.shuffle(fresh)
    rng.shuffle(seen)
    return fresh + seen


class RFTTrainer:
    def __init__(self, config: RFTConfig, verifier: Verifier):
        self.config = config
        self.verifier = verifier

    def sample(self, model, tokenizer, rows: list[dict[str, Any]], seed: int) -> list[VerifiedSample]:
        """``samples_per_prompt`` trajectories per row, each scored by the Verifier."""
        cfg = self.config
        k = cfg.samples_per_prompt
        prompts = [r["prompt"] for r in rows for _ in range(k)]
        completions = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
                               batch_size=cfg.generation_batch_size)
        samples = []
        for i, completion in enumerate(completions):
            verdict = self.verifier.verify_trajectory(parse_task_column(rows[i // k]["task"]), strip_think(completion))
            samples.append(VerifiedSample(i // k, prompts[i], completion, verdict.score, verdict.passed,
                                          verdict.format_ok))
        return samples

    def train(self, model_path: str, rows: list[dict[str, Any]], work_dir: Path, out_dir: Path,
              report_to: list[str], on_log: Callable[[dict], None] | None = None,
              make_selector: Callable[[Any], Any] | None = None) -> dict[str, Any]:
        """Run the rounds from ``model_path`` on ``rows`` ({prompt, task[, fresh]}); write the model to
        ``out_dir``. ``make_selector(tokenizer)`` gives a ``BestCheckpointSelector`` that validates
        the start and every round; the best round is published (never the start)."""
        from srl_assets.models.sft import warm_start_sft
        from srl_assets.training.progress_callback import TrainerProgress

        cfg = self.config
        need = cfg.rounds * cfg.prompts_per_round
        if len(rows) < need:
            raise ValueError(f"RFT needs rounds * prompts_per_round = {need} training tasks, got {len(rows)}: "
                             "raise n_tasks or lower prompts_per_round")
        ordered = order_rows(rows, cfg.seed)
        rounds: list[dict[str, Any]] = []
        resumed_from = None
        start_round = 0
        # A retried op skips the rounds that another round followed and that finished their model.
        for r in range(cfg.rounds - 1, -1, -1):
            if (work_dir / f"round-{r}" / "model" / "config.json").is_file():
                rounds = json.loads((work_dir / f"round-{r}" / "model" / "rounds.json").read_text())
                start_round, resumed_from = r + 1, str(work_dir / f"round-{r}" / "model")
                break
        model, tokenizer = load_model(resumed_from or model_path)
        selector = make_selector(tokenizer) if make_selector is not None else None
        if selector is not None and start_round == 0:  # a resumed run kept the start's validation on disk
            selector.measure_start(model)
        metrics = MetricsCallback(on_log)
        for r in range(start_round, cfg.rounds):
            round_dir = work_dir / f"round-{r}"
            round_dir.mkdir(parents=True, exist_ok=True)
            samples_file = round_dir / "samples.jsonl"
            if samples_file.is_file():
                samples = [VerifiedSample(**row) for row in read_rows(samples_file)]
                resumed_from = resumed_from or str(samples_file)
            else:
                tasks = ordered[r * cfg.prompts_per_round:(r + 1) * cfg.prompts_per_round]
                samples = self.sample(model, tokenizer, tasks, seed=cfg.seed + r)
                write_rows(samples_file, [asdict(s) for s in samples])
            kept = select_samples(samples, cfg.min_score)
            scores = [s.score for s in samples]
            stats = {"round": r, "samples": len(samples), "sample_score_mean": statistics.fmean(scores),
                     "sample_pass_rate": sum(s.passed for s in samples) / len(samples),
                     "format_violation_rate": sum(not s.format_ok for s in samples) / len(samples),
                     "tasks": len(samples) // cfg.samples_per_prompt, "kept": len(kept),
                     "generated_tokens": sum(len(ids) for ids in tokenizer(
                         [s.completion for s in samples], add_special_tokens=False)["input_ids"])}
            done = sum(x["steps"] for x in rounds)  # fine-tuning steps of the earlier rounds
            if on_log is not None:
                on_log({"step": done, **stats})
            if not kept and cfg.empty_round == "skip":
                stats.update(steps=0, final_loss=float("nan"))
                rounds.append(stats)
                continue
            if not kept:
                raise ValueError(f"RFT round {r}: none of {len(samples)} samples reached min_score "
                                 f"{cfg.min_score}; lower min_score or raise samples_per_prompt")
            sft_dir = round_dir / "sft"
            checkpoint = resume_point(sft_dir)
            resumed_from = checkpoint or resumed_from
            stats["steps"] = cfg.round_steps(len(kept))
            result = warm_start_sft(model, tokenizer, [{"prompt": s.prompt, "completion": s.completion.strip()}
                                                       for s in kept],
                                    sft_dir, max_steps=stats["steps"], lr=cfg.learning_rate,
                                    batch_size=cfg.batch_size, seed=cfg.seed + r, warmup_steps=5,
                                    report_to=report_to, save_steps=cfg.save_steps,
                                    resume_from_checkpoint=checkpoint,
                                    callbacks=[metrics, *([TrainerProgress(on_log, "RFT steps")] if on_log else [])])
            stats["final_loss"] = result["final_loss"]
            rounds.append(stats)
            if selector is not None:
                selector.consider(model, done + stats["steps"])
            if r + 1 < cfg.rounds:
                self._save_round(model, tokenizer, round_dir, rounds)
        if selector is not None:
            selector.restore_best(model)
        save_model(model, tokenizer, out_dir)
        return {"config": asdict(cfg), "resumed_from": resumed_from, "steps": sum(x["steps"] for x in rounds),
                "processes": 1, "rounds": rounds, "log": metrics.logs,
                "kept": sum(x["kept"] for x in rounds),
                "raw_reward_history": [x["sample_score_mean"] for x in rounds],
                "format_violation_rate": (sum(x.get("format_violation_rate", 0.0) * x["samples"] for x in rounds)
                                          / max(1, sum(x["samples"] for x in rounds))),
                **(selector.summary() if selector else {})}

    @staticmethod
    def _save_round(model, tokenizer, round_dir: Path, rounds: list[dict[str, Any]]) -> None:
        """The round's model and stats, written aside and renamed: a retry starts from the next round."""
        tmp = round_dir / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(model, tokenizer, tmp)
        (tmp / "rounds.json").write_text(json.dumps(rounds))
        shutil.rmtree(round_dir / "model", ignore_errors=True)
        os.replace(tmp, round_dir / "model")
