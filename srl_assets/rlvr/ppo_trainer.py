"""The project's own PPO for causal language models (TRL removed its PPOTrainer in 1.13).

One completion per prompt, a value head on the policy's last hidden state, per-token rewards
(a KL penalty against a frozen reference model at every token, the outcome score at the last one),
GAE advantages, then a few epochs of clipped policy and value updates (Schulman et al., 2017;
the RLHF recipe of Ziegler et al., 2019).

The tensor functions at the top are pure and tested on hand-computed numbers; `PPOTrainer` wires
them into one loop a reader can follow in one sitting. Shapes: B = batch (prompts), T = completion
tokens, V = vocabulary, H = hidden size.

Given a checkpoint folder, `train` writes `checkpoint-<step>/` every `save_steps` steps (see
"Checkpoints" below) and a rerun resumes from the latest complete one, ending where an
uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from srl_assets.kl_controller import KLController, make_kl_controller
from srl_assets.training.checkpoint_folders import CHECKPOINT_NAME, numbered_checkpoints
from srl_assets.training.configs import PPOConfig  # noqa: F401  (re-exported: the trainer's config)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


# ----------------------------------------------------------------------------------------------
# Pure tensor functions


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is 1.

    values, mask: the same shape, e.g. [B, T]. dim=None: a scalar over all unmasked positions;
    else the mean along `dim`. An all-zero mask gives NaN, on purpose: it means no token was scored.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of `values` [B, T] over the unmasked positions: a scalar."""
    mean = masked_mean(values, mask)
    return masked_mean((values - mean) ** 2, mask)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale `values` [B, T] to unit variance (zero mean if `shift_mean`) over unmasked tokens.

    Masked positions come back as 0, so padding never carries an advantage. The variance is the
    population one: a batch of a single token does not divide by zero.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al., 2016) over completion tokens.

    rewards, values, mask: [B, T]. Returns (advantages [B, T], returns [B, T]).

        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
        A_t     = (delta_t + gamma * lam * m_{t+1} * A_{t+1}) * m_t
        R_t     = (A_t + V_t) * m_t

    A position whose successor is masked (or the last position) is terminal: nothing is
    bootstrapped from padding, and padding positions get advantage and return 0. Inputs are
    treated as constants: call it under `torch.no_grad()` or with detached tensors.
    """
    mask = mask.to(rewards.dtype)
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros(batch, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(next_advantage)
    next_mask = torch.zeros_like(next_advantage)
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_advantage = (delta + gamma * lam * next_mask * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value, next_mask = values[:, t], mask[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, averaged over unmasked tokens.

    logprobs, old_logprobs, advantages, mask: [B, T]. Returns (loss, clipfrac), both scalars:

        ratio = exp(logprobs - old_logprobs)
        loss  = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))

    clipfrac is the fraction of tokens where the clipped term was the larger (the update there
    was cut off): a health signal, high values mean too large a learning rate.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    return loss, clipfrac


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_value: float,
) -> torch.Tensor:
    """Clipped value loss, averaged over unmasked tokens: a scalar.

    values, old_values, returns, mask: [B, T].

        v_clip = old_values + clip(values - old_values, -clip_value, clip_value)
        loss   = 0.5 * mean(max((values - returns)^2, (v_clip - returns)^2))

    Taking the larger error keeps the value head from moving far from the values the advantages
    were computed with in one batch.
    """
    clipped = old_values + torch.clamp(values - old_values, -clip_value, clip_value)
    errors = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(errors, mask)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the next-token distributions over unmasked positions: a scalar.

    logits: [B, T, V], mask: [B, T]. H = logsumexp(z) - sum(softmax(z) * z).
    """
    probs = torch.softmax(logits, dim=-1)
    entropy = torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)  # [B, T]
    return masked_mean(entropy, mask)


# ----------------------------------------------------------------------------------------------
# Checkpoints
#
# checkpoint-<step>/ (step = completed steps) holds:
#   the policy                 save_pretrained + the tokenizer: a folder `load_model` can read
#   value_head.pt              the value head's state_dict
#   optimizer.pt               AdamW's state_dict (moments and step counts)
#   rng_state.pt               {"python": random.Random state, "torch": CPU generator, "cuda": ...}
#   trainer_state.json         {"step", "metrics" (a row per step), "kl_controller", "config"}
#   COMPLETE                   the completion marker, written last
# A checkpoint is written to .checkpoint-<step>.tmp/ in the same folder and renamed into place, so
# a killed run leaves either a complete checkpoint or a temporary folder nobody resumes from.

CHECKPOINT_MARKER = "COMPLETE"
CHECKPOINTS_KEPT = 2
_VALUE_HEAD, _OPTIMIZER, _RNG = "value_head.pt", "optimizer.pt", "rng_state.pt"
_STATE = "trainer_state.json"
# Fields that may differ between the run that wrote a checkpoint and the run resuming from it.
_RESUMABLE_CHANGES = {"num_steps", "save_steps"}


def complete_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """The complete `checkpoint-<step>` folders in `folder` as (step, path), oldest first.

    A folder counts only with its completion marker: one without it (cut short, or copied in by
    hand) is never resumed from.
    """
    return numbered_checkpoints(folder, lambda path: (path / CHECKPOINT_MARKER).is_file())


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint with the most steps in `folder`, or None."""
    found = complete_checkpoints(folder)
    return found[-1][1] if found else None


# ----------------------------------------------------------------------------------------------
# Value head and trainer


class ValueHead(nn.Module):
    """A linear value estimate V(s_t) from the policy's last hidden state: [B, T, H] -> [B, T]."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states).squeeze(-1)


class PPOTrainer:
    """PPO on a causal LM; `train` updates `model` in place and returns one metrics dict per step.

    `reward_fn(prompts, completions) -> list[float]` scores decoded completions (e.g. the
    verifier's score on the final spec). `ref_model` is the frozen policy the KL penalty is
    measured against. `kl_controller` defaults to one built from the config's kl_* fields; pass
    one to share it across runs. After `train`, `resumed_from` is the checkpoint it resumed from
    (or None).
    """

    def __init__(
        self,
        model: nn.Module,
        ref_model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        config: PPOConfig,
        kl_controller: KLController | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("tokenizer needs both pad_token_id and eos_token_id set")
        self.model, self.ref_model, self.tokenizer = model, ref_model, tokenizer
        self.reward_fn, self.config = reward_fn, config
        if kl_controller is None:
            kl_controller = make_kl_controller(
                config.kl_controller, config.kl_coef, config.kl_target, config.kl_horizon
            )
        self.kl_controller = kl_controller
        self.device = model.device
        # The value head stays float32 even when the policy runs in bf16: it is tiny and its
        # regression target (the returns) needs the precision.
        self.value_head = ValueHead(model.config.hidden_size).to(self.device)
        self.params = [*model.parameters(), *self.value_head.parameters()]
        # No weight decay: it would pull the policy towards zero, away from the reference model.
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=0.0)
        # Dropout off everywhere: on the first epoch the ratio pi/pi_old must be exactly 1.
        self.model.eval()
        self.ref_model.eval()
        self.ref_model.requires_grad_(False)
        self.metrics: list[dict[str, float]] = []
        self.resumed_from: Path | None = None

    # -- helpers --------------------------------------------------------------------------------

    @torch.no_grad()
    def _generate(self, prompts: list[str]) -> tuple[torch.Tensor, ...]:
        """Sample one completion per prompt.

        Returns (input_ids [B, P+T], attention_mask [B, P+T], response_mask [B, T]); the prompt
        is left-padded so every completion starts at column P, and response_mask is 1 up to and
        including the first EOS (padding after it is 0).
        """
        cfg, tok = self.config, self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left").to(self.device)
        sequences = self.model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            do_sample=True,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=0,  # sample from the full distribution: the one PPO's log-probs describe
            top_p=1.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        response = sequences[:, enc["input_ids"].shape[1] :]  # [B, T]
        # The mask comes from EOS, not from pad ids: a sampled pad token is a real token.
        is_eos = (response == tok.eos_token_id).long()
        after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
        response_mask = (~after_eos).long()
        attention_mask = torch.cat([enc["attention_mask"], response_mask], dim=1)
        return sequences, attention_mask, response_mask

    def _forward(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        T: int,
        with_values: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Log-probs [B, T] of the completion tokens, values [B, T] (or None), logits [B, T, V]."""
        device = model.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        # Positions count real tokens only, so left padding does not shift the prompt.
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=with_values,
            use_cache=False,
        )
        # Logits at position i predict token i+1: the T completion tokens are predicted by the
        # T positions before them.
        logits = out.logits[:, -T - 1 : -1].float() / self.config.temperature  # [B, T, V]
        response = input_ids[:, -T:]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
        values = None
        if with_values:
            hidden = out.hidden_states[-1][:, -T - 1 : -1].float()  # [B, T, H]
            values = self.value_head(hidden.to(self.device))
        return logprobs.to(self.device), values, logits.to(self.device)

    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        scores = [float(s) for s in self.reward_fn(prompts, completions)]
        if len(scores) != len(prompts):
            raise ValueError(f"reward_fn returned {len(scores)} scores for {len(prompts)} prompts")
        if not all(math.isfinite(s) for s in scores):
            raise ValueError(f"reward_fn returned a non-finite score: {scores}")
        return torch.tensor(scores, dtype=torch.float32, device=self.device)  # [B]

    # -- one PPO step ---------------------------------------------------------------------------

    def step(self, prompts: list[str]) -> dict[str, float]:
        """Roll out, score and update on one batch of prompts; return the step's metrics."""
        cfg = self.config

        # 1. rollout: one sampled completion per prompt, decoded and scored
        input_ids, attention_mask, response_mask = self._generate(prompts)
        B, T = response_mask.shape
        mask = response_mask.float()  # [B, T]
        completions = [
            self.tokenizer.decode(row[m.bool()], skip_special_tokens=True)
            for row, m in zip(input_ids[:, -T:], response_mask)
        ]
        scores = self._score(prompts, completions)  # [B]

        # 2. the rollout's log-probs, values and reference log-probs: constants from here on
        with torch.no_grad():
            old_logprobs, old_values, _ = self._forward(self.model, input_ids, attention_mask, T,
                                                        with_values=True)
            ref_logprobs, _, _ = self._forward(self.ref_model, input_ids, attention_mask, T,
                                               with_values=False)

            # 3. per-token rewards: -kl_coef * KL at every token, plus the score at the last one
            kl = (old_logprobs - ref_logprobs) * mask  # [B, T]
            kl_coef = self.kl_controller.value
            rewards = -kl_coef * kl
            last = response_mask.sum(dim=1) - 1  # [B] index of each completion's last token
            rewards[torch.arange(B, device=self.device), last] += scores

            # 4. advantages (whitened over the batch's tokens) and value targets
            advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = masked_whiten(advantages, mask)

        # 5. ppo_epochs updates of policy and value head on the whole batch
        names = ["policy_loss", "value_loss", "entropy", "clipfrac", "grad_norm"]
        totals = dict.fromkeys(names, 0.0)  # means over the epochs
        for _ in range(cfg.ppo_epochs):
            logprobs, values, logits = self._forward(self.model, input_ids, attention_mask, T,
                                                     with_values=True)
            pg_loss, clipfrac = policy_loss(logprobs, old_logprobs, advantages, mask, cfg.clip_eps)
            vf_loss = value_loss(values, old_values, returns, mask, cfg.clip_value)
            entropy = entropy_from_logits(logits, mask)
            loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()

            for name, value in zip(names, [pg_loss, vf_loss, entropy, clipfrac, grad_norm]):
                totals[name] += value.item() / cfg.ppo_epochs

        # 6. adapt the KL coefficient to the KL per completion (summed over its tokens)
        mean_kl = kl.sum(dim=1).mean().item()
        self.kl_controller.update(mean_kl, B)
        return {
            "reward_mean": scores.mean().item(),
            "reward_std": scores.std(unbiased=False).item(),
            "kl": mean_kl,
            "kl_coef": kl_coef,
            "completion_length": mask.sum(dim=1).mean().item(),
            **totals,
        }

    def train(
        self,
        prompts: Sequence[str],
        on_step: Callable[[dict[str, float]], None] | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Run `config.num_steps` steps on batches drawn from `prompts`; return all metrics.

        Batches are drawn without replacement within a step (with replacement when there are
        fewer prompts than `batch_size`). `on_step` receives each step's metrics, e.g. for wandb.

        With `checkpoint_dir`, a checkpoint is written there every `config.save_steps` steps and
        after the last one (the newest `CHECKPOINTS_KEPT` are kept), and the run first resumes from
        the latest complete checkpoint: weights, value head, optimizer, KL coefficient, random
        states, step counter and metrics, so it ends as an uninterrupted run would (the metrics
        of the steps before the checkpoint are returned but not passed to `on_step` again).
        """
        if len(prompts) == 0:
            raise ValueError("prompts is empty")
        cfg = self.config
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)  # generation samples from torch's global generator
        prompts = list(prompts)
        start = 0
        if checkpoint_dir is not None:
            checkpoint_dir = Path(checkpoint_dir)
            self.resumed_from = latest_checkpoint(checkpoint_dir)
            if self.resumed_from is not None:
                start = self._load_checkpoint(self.resumed_from, rng)
        for step in range(start, cfg.num_steps):
            if len(prompts) >= cfg.batch_size:
                batch = rng.sample(prompts, cfg.batch_size)
            else:
                batch = rng.choices(prompts, k=cfg.batch_size)
            metrics = {"step": step, **self.step(batch)}
            self.metrics.append(metrics)
            if on_step is not None:
                on_step(metrics)
            done = step + 1
            if checkpoint_dir is not None and (done % cfg.save_steps == 0 or done == cfg.num_steps):
                self._save_checkpoint(checkpoint_dir, done, rng)
        return self.metrics

    # -- checkpoints ----------------------------------------------------------------------------

    def _save_checkpoint(self, folder: Path, step: int, rng: random.Random) -> Path:
        """Write `folder/checkpoint-<step>/` atomically; keep the newest `CHECKPOINTS_KEPT`."""
        final = folder / f"checkpoint-{step}"
        tmp = folder / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving this step
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        torch.save(self.value_head.state_dict(), tmp / _VALUE_HEAD)
        torch.save(self.optimizer.state_dict(), tmp / _OPTIMIZER)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        torch.save({"python": rng.getstate(), "torch": torch.get_rng_state(), "cuda": cuda},
                   tmp / _RNG)
        state = {
            "step": step,
            "metrics": self.metrics,
            "kl_controller": self.kl_controller.state_dict(),
            "config": asdict(self.config),
        }
        (tmp / _STATE).write_text(json.dumps(state, indent=1))
        (tmp / CHECKPOINT_MARKER).write_text(f"{step}\n")
        shutil.rmtree(final, ignore_errors=True)  # an incomplete folder of the same name
        os.replace(tmp, final)
        self._rotate_checkpoints(folder)
        return final

    @staticmethod
    def _rotate_checkpoints(folder: Path) -> None:
        """Keep the newest `CHECKPOINTS_KEPT` complete checkpoints; drop every other one."""
        keep = {path for _, path in complete_checkpoints(folder)[-CHECKPOINTS_KEPT:]}
        for path in folder.iterdir():
            ours = CHECKPOINT_NAME.match(path.name) or (
                path.name.startswith(".checkpoint-") and path.name.endswith(".tmp")
            )
            if ours and path.is_dir() and path not in keep:
                shutil.rmtree(path)

    def _load_checkpoint(self, path: Path, rng: random.Random) -> int:
        """Restore what `_save_checkpoint` wrote into this trainer and `rng`; return the step."""
        from transformers import AutoModelForCausalLM

        state = json.loads((path / _STATE).read_text())
        step = int(state["step"])
        if step > self.config.num_steps:
            raise ValueError(f"checkpoint {path} is at step {step}, past PPOConfig.num_steps = "
                             f"{self.config.num_steps}: resume with num_steps >= {step}")
        if len(state["metrics"]) != step:
            raise ValueError(f"checkpoint {path} holds {len(state['metrics'])} metrics rows for "
                             f"{step} steps")
        changed = _config_changes(state.get("config", {}), asdict(self.config))
        if changed:
            raise ValueError(f"checkpoint {path} was written with other PPOConfig values for "
                             f"{changed}; resume with the same config or start in a new folder")
        # Weights are copied into the existing parameters: the optimizer keeps pointing at them.
        dtype = next(self.model.parameters()).dtype
        saved = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self.model.load_state_dict(saved.state_dict())
        del saved
        # Loaded on the CPU: load_state_dict copies (or casts) onto the parameters' device.
        self.value_head.load_state_dict(torch.load(path / _VALUE_HEAD, map_location="cpu"))
        self.optimizer.load_state_dict(torch.load(path / _OPTIMIZER, map_location="cpu"))
        self.kl_controller.load_state_dict(state["kl_controller"])
        rng_state = torch.load(path / _RNG, map_location="cpu")
        version, internal, gauss = rng_state["python"]
        rng.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(rng_state["torch"])
        if rng_state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng_state["cuda"])
        self.metrics = [dict(row) for row in state["metrics"]]
        return step


def _config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the config fields whose values differ, ignoring `_RESUMABLE_CHANGES`."""
    names = (saved.keys() | current.keys()) - _RESUMABLE_CHANGES
    return sorted(n for n in names if saved.get(n) != current.get(n))
