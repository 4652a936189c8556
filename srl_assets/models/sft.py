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
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from srl_assets.models.tiny import pick_device
from srl_assets.prompt_contract import render_example
from srl_assets.training.processes import per_process

log = logging.getLogger(__name__)

# Full logits of a batch cost batch x length x vocab floats: 8 x 300 x 1k (10 MB) for the tiny default; TRL's chunked
# head is the right tool past this vocabulary (a 150k-vocabulary model's would be 1.4 GB).
FULL_LOGITS_MAX_VOCAB = 32_768
# Architectures whose CausalLM forward is ``lm_head(model(...).last_hidden_state)``, no logit scaling or soft-capping
# (checked in transformers 5.24's modeling files): their head can run on the completion positions alone.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class FullLogitsSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer``, with the loss taken from the model's full logits when training on CPU with a small
    vocabulary.

    TRL 1.16 computes SFT's loss through a fused, chunked LM head (``trl.kernels.chunked_logprob``) so that a large
    vocabulary's logits never exist in full on a GPU. On CPU its torch fallback scores every position (prompt and
    padding too) tile by tile: with the tiny default's 1k vocabulary it took 9.1 of 21.3 s of 200 demo-shaped steps
    (cProfile, batch 8 x ~280 tokens). Here the same loss (the completion tokens' summed negative log-likelihood over
    the Trainer's token count, scaled for several processes as TRL does) comes from ``F.cross_entropy`` on the
    logits, and the same metrics are logged (``entropy``, ``mean_token_accuracy``, ``num_tokens``); the loss curve
    matches TRL's to float rounding (``tests/test_models.py``).

    For a model whose logits are its LM head over its decoder's last hidden state (``PLAIN_HEAD_MODEL_TYPES``),
    unwrapped (one process), only the completion positions' hidden states go through the head: the prompt and
    padding positions' logits are never made, and the backward of picking the scored positions moves a
    (tokens, hidden) gradient instead of a (batch, length, vocab) one. On the demo's building base (batch 8 x
    ~310 tokens) that took a step from 95-101 ms to 74-83 ms (2 runs each, 200 steps, same losses to the last
    digit; docs/experiments.md). Anything else (a GPU, a vocabulary above
    ``FULL_LOGITS_MAX_VOCAB``, label smoothing, another ``loss_type``, a custom ``compute_loss_func``, MoE auxiliary
    losses, sequence parallelism, padding-free batches, pre-shifted labels) takes TRL's own path.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.model.config.get_text_config()
        self.full_logits = (self.accelerator.device.type == "cpu"
                            and getattr(config, "vocab_size", FULL_LOGITS_MAX_VOCAB + 1) <= FULL_LOGITS_MAX_VOCAB
                            and self.compute_loss_func is None and self.label_smoother is None
                            and self.args.loss_type == "nll" and not self.aux_loss_enabled
                            and getattr(self.accelerator, "parallelism_config", None) is None)
        # One process only: under DDP the wrapper's own forward must run (it syncs the gradients).
        self.head_on_completions = (self.full_logits and self.accelerator.num_processes == 1
                                    and getattr(config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if (not self.full_logits or return_outputs
                or not {"labels", "attention_mask"} <= inputs.keys() or "shift_labels" in inputs):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"][:, 1:]
        mask = labels != -100
        features = {k: v for k, v in inputs.items() if k != "labels"}
        if self.head_on_completions:
            hidden = model.get_decoder()(**features, use_cache=False).last_hidden_state[:, :-1]
            scored = model.get_output_embeddings()(hidden[mask]).float()   # (valid tokens, vocab)
        else:
            scored = model(**features, use_cache=False).logits[:, :-1][mask].float()
        targets = labels[mask]                                             # (valid tokens,)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        loss = F.cross_entropy(scored, targets, reduction="sum") / count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients across processes
        with torch.no_grad():
            scored = scored.detach()
            entropy = scored.logsumexp(-1) - (scored.softmax(-1) * scored).sum(-1)
            gather = self.accelerator.gather_for_metrics
            valid = gather(mask.sum()).sum()
            entropy_sum = gather(entropy.sum()).sum()
            correct = gather((scored.argmax(-1) == targets).sum()).sum()
            self._metrics[mode]["entropy"].append((entropy_sum / valid).item() if valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            if mode == "train":
                self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss


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
    loss), ``mean_loss`` over the run, ``loss_history``, ``steps``, ``examples_per_step``, ``seconds``,
    ``seconds_per_step`` and ``loss_from`` (which path computed the loss, see ``FullLogitsSFTTrainer``).
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
    trainer = FullLogitsSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
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
        "loss_from": ("LM head on completion tokens" if trainer.head_on_completions else
                      "full logits" if trainer.full_logits else "TRL's chunked LM head"),
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
