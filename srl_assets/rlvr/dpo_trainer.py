"""DPOTrainer stage: verifier-ranked preference pairs sampled from the SRL policy, trained with TRL.

For each prompt the policy writes several samples; the verifier scores them; the best becomes
``chosen`` and the worst ``rejected`` when their scores differ by more than ``min_margin``
(equal scores say nothing about which is better, so such prompts give no pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer as TRLDPOTrainer

from srl_assets.models.tiny import generate, pick_device
from srl_assets.training.configs import DPOStageConfig
from srl_assets.training.processes import per_process, world_size


@dataclass(frozen=True)
class ScoredSample:
    prompt: str
    completion: str
    score: float


def build_preference_pairs(samples: list[ScoredSample], min_margin: float = 0.0) -> list[dict[str, Any]]:
    """One pair per prompt: highest-scored sample chosen, lowest rejected (first seen wins ties)."""
    by_prompt: dict[str, list[ScoredSample]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt, []).append(s)
    pairs = []
    for prompt, group in by_prompt.items():
        ranked = sorted(group, key=lambda s: -s.score)  # stable: ties keep sampling order
        best, worst = ranked[0], ranked[-1]
        if best.score - worst.score > min_margin:
            pairs.append({"prompt": prompt, "chosen": best.completion, "rejected": worst.completion,
                          "chosen_score": best.score, "rejected_score": worst.score})
    return pairs


def sample_and_rank(model, tokenizer, prompts: list[str], score: Callable[[str, str], float],
                    cfg: DPOStageConfig) -> list[ScoredSample]:
    repeated = [p for p in prompts for _ in range(cfg.samples_per_prompt)]
    completions = generate(model, tokenizer, repeated, max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, seed=cfg.seed)
    return [ScoredSample(p, c, score(p, c)) for p, c in zip(repeated, completions)]


def train_dpo(model, tokenizer, pairs: list[dict[str, Any]], cfg: DPOStageConfig, output_dir: Path,
              report_to: list[str], callbacks: list, resume_from: str | None) -> TRLDPOTrainer:
    if not pairs:
        raise ValueError("DPO found no preference pair: every prompt's samples scored the same")
    device, dtype = pick_device()
    args = DPOConfig(
        output_dir=str(output_dir), max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        beta=cfg.beta, per_device_train_batch_size=max(1, min(per_process(cfg.batch_size, "batch_size"),
                                                           len(pairs) // world_size())),
        use_cpu=device == "cpu", bf16=dtype == torch.bfloat16, activation_checkpointing=False,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed,
        logging_steps=1, report_to=report_to, disable_tqdm=True, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every weight of a causal LM takes part in the loss
    )
    columns = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    trainer = TRLDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(columns),
                            processing_class=tokenizer, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer
