"""Warm-start SFT: teach a base policy the trajectory format before SRL and RLVR.

A randomly initialised tiny model cannot produce a single well-formed step, so step-wise rewards would
all be -1 and carry no signal. A short supervised run on verified expert trajectories (TRL
``SFTTrainer``, prompt-completion format, loss on the completion only) gives a policy that writes the
format and sometimes, not always, the right content: the starting point the SRL paper assumes.

Examples are raw prompt text and completion; each row is rendered by the tokenizer's prompt contract
(``srl_assets.prompt_contract``), the same rendering ``generate`` gives the prompt later: the raw text
for the tiny default (no chat pretraining to preserve), the chat template for an instruct model. Rows
stay plain text for TRL either way, so the prompt is a token prefix of prompt+completion. The caller
chooses the completion (e.g. a trajectory, optionally behind a ``<think>...</think>`` block); it ends
with the EOS token (the trainer appends it), so the model learns where to stop.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from srl_assets.models.tiny import pick_device
from srl_assets.prompt_contract import render_example
from srl_assets.training.processes import per_process

log = logging.getLogger(__name__)


def warm_start_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]],
                   out_dir: str | Path, max_steps: int = 300, lr: float = 1e-3, batch_size: int = 8,
                   seed: int = 0, warmup_steps: int = 10, max_length: int | None = 1024,
                   report_to: list[str] | None = None, save_steps: int | None = None,
                   resume_from_checkpoint: str | None = None,
                   logging_steps: int = 1, callbacks: list | None = None) -> dict[str, Any]:
    """Train ``model`` in place on ``examples`` (``{"prompt": ..., "completion": ...}``) for ``max_steps``.

    ``lr`` 1e-3 suits a freshly initialised tiny model; use ~1e-5 for a pretrained one. Intermediate
    checkpoints are written under ``out_dir`` only when ``save_steps`` is given; save the final model
    with ``save_model``. ``report_to`` is ``[]`` by default (pass ``["wandb"]`` to track the run);
    ``callbacks`` are TrainerCallbacks (e.g. one that streams the log lines to Dagster Pipes).

    ``batch_size`` is the number of examples per step over all training processes (several under
    ``accelerate launch``). Returns ``initial_loss`` and ``final_loss`` (first and last logged training
    loss), ``mean_loss`` over the run, ``loss_history``, ``steps``, ``examples_per_step``, ``seconds``
    and ``seconds_per_step``.
    """
    if not examples:
        raise ValueError("no SFT examples")
    for i, ex in enumerate(examples):
        if not isinstance(ex.get("prompt"), str) or not isinstance(ex.get("completion"), str):
            raise ValueError(f"example {i} needs string 'prompt' and 'completion', got keys {sorted(ex)}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be positive, got {max_steps}")

    device, dtype = pick_device()
    args = SFTConfig(
        output_dir=str(out_dir),
        max_steps=max_steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(warmup_steps, max_steps // 2),
        per_device_train_batch_size=per_process(batch_size, "sft_batch_size"),  # a total over processes
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        activation_checkpointing=False,  # TRL turns it on by default; a tiny model needs no memory saving
        completion_only_loss=True,  # the prompt is given at inference: learn to write the completion only
        max_length=max_length,
        packing=False,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        logging_steps=logging_steps,
        logging_first_step=True,
        report_to=report_to or [],
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every weight of a causal LM takes part in the loss
    )
    dataset = Dataset.from_list(sft_rows(tokenizer, examples))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=callbacks)

    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - started

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"SFT produced no finite training loss: {losses[:5]}")
    metrics = {
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "mean_loss": result.training_loss,
        "loss_history": losses,
        "steps": trainer.state.global_step,
        # The Trainer's own count over every process (per-device batch x accumulation x processes).
        "examples_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "seconds": seconds,
        "seconds_per_step": seconds / max(trainer.state.global_step, 1),
    }
    log.info("SFT: %d steps in %.1fs, loss %.3f -> %.3f", metrics["steps"], seconds, losses[0], losses[-1])
    model.eval()
    return metrics


def sft_rows(tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]]) -> list[dict[str, str]]:
    """The TRL rows of ``examples``, rendered by the tokenizer's prompt contract."""
    rows = []
    for ex in examples:
        prompt, completion = render_example(tokenizer, ex["prompt"], ex["completion"])
        rows.append({"prompt": prompt, "completion": completion})
    return rows
