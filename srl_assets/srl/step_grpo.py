"""SRL as step-wise GRPO in the evaluation's own prompt format (Deng et al., 2025, arXiv 2510.25992).

A step instance's prompt is the prompt evaluation, RLVR and serving use (``task_prompt``) followed by
the expert's steps 1..k-1, one per line; the policy continues with step k, exactly as it would write
it inside a whole trajectory, and the rollout ends at the line break. The step it wrote (plus any
partial line the prompt ends with, e.g. a shown title) is scored against the expert's step k by a
registered step reward (``srl_assets.srl.step_reward``); rewards are normalized per group of
``num_generations`` rollouts of one prompt, groups whose rewards all agree carry no signal and are
left out (dynamic sampling on the reward's spread, as the method notes ask), and the policy takes a
token-level policy-gradient step on the rest (GRPO with one update per batch, so PPO's ratio is 1 and
its clip never binds; an optional KL penalty to the start, the paper's is 0).

With ``expert_samples`` > 0, that many members of each group are the expert's own step k instead of a
rollout (off-policy guidance as in LUFFY, Yan et al. 2025, arXiv 2504.14945): scored like any rollout,
it earns a positive advantage exactly when the policy's own rollouts fall short of it, so the update
raises its likelihood where the policy is wrong and leaves a step the policy already writes alone (a
group that all agrees carries no signal). It is the on-policy gradient of its log-probability (no importance weight: LUFFY's
policy shaping is not applied). 0 is the paper's on-policy SRL.

With ``update: rft`` the rewards select instead of weigh: rejection sampling at the step level, as RLVR's RFT
does for whole trajectories. The members whose step reward reaches ``keep_reward`` (the expert's own steps,
with ``expert_samples`` > 0, and the rollouts that match them) get a plain likelihood step (advantage 1,
token-mean over the kept tokens); the rest, the normalizer and dynamic sampling play no part. The log's
``kept_rollouts`` counts the policy's own kept rollouts per step.

Why not TRL's ``GRPOTrainer`` (which the RLVR GRPO stage uses): it ends a completion only at EOS,
so a step that ends at a line break would be trained together with whatever the policy writes after
it, and it samples with HF ``generate``; here rollouts go through the project's sampler
(``srl_assets.models.sampler``, several times faster at these shapes) with any line break as a stop.

Resume: every ``save_steps`` steps the model, the optimizer and the trainer state are written to
``checkpoint-<step>`` (aside, then renamed); a rerun continues from the newest complete one and
draws the same prompts and samples it would have drawn (both are seeded by the step number).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from srl_assets.kl_controller import KLController
from srl_assets.models.sampler import pick_sampler
from srl_assets.models.tiny import load_model, save_model
from srl_assets.prompt_contract import render_prompt
from srl_assets.reward_normalizer import make_normalizer
from srl_assets.srl.dynamic_sampling import group_std
from srl_assets.srl.step_reward import FORMAT_VIOLATION_REWARD
from srl_assets.training.checkpoint_folders import numbered_checkpoints
from srl_assets.training.configs import StepSRLConfig

STATE_FILE = "srl_state.json"  # written last into a checkpoint folder: its presence marks it complete


def line_break_ids(tokenizer) -> list[int]:
    """Every token id whose text holds a line break, and EOS: where a step ends."""
    ids = [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the tokenizer has no token holding a line break: SRL steps could never end")
    return sorted(set(ids))


def step_text(prompt: str, completion: str) -> str:
    """The step the policy wrote: the prompt's unfinished last line (empty when it ends with a line
    break) and the completion up to its first line break.

    >>> step_text("Task: t\\nPlan:\\n1. **A** a\\n", "2. **B** b\\n3. **C**")
    '2. **B** b'
    >>> step_text("Task: t\\nPlan:\\n2. **B**", " b\\n")
    '2. **B** b'
    """
    partial = prompt.rsplit("\n", 1)[-1]
    return (partial + completion.split("\n", 1)[0]).strip()


def expert_completion(tokenizer, prompt: str, target: str, last: bool) -> list[int]:
    """The token ids the policy would write to produce the expert's ``target`` step after ``prompt``:
    the rest of the prompt's unfinished last line (a shown title) and the step, ending as a rollout
    must (``ends_right``): a line break, or EOS after a trajectory's final step."""
    partial = prompt.rsplit("\n", 1)[-1]
    if not target.startswith(partial):
        raise ValueError(f"SRL row: the expert step {target[:60]!r} does not continue the prompt's last "
                         f"line {partial[:60]!r}, so it cannot be written as a rollout of that prompt")
    text = target[len(partial):]
    ids = tokenizer(text if last else text + "\n", add_special_tokens=False)["input_ids"]
    if last and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    if not ids:
        raise ValueError(f"SRL row: the expert step after {partial[:60]!r} is empty")
    return ids


def merge_duplicates(keys: list) -> tuple[list[int], list[float]]:
    """The first member of each set of equal ``keys`` (prompt, completion ids, advantage), with how many
    members it stands for. Training on it once with that weight gives the token-mean loss and gradient of
    training on each copy, in one forward/backward instead of several: a group's expert copies
    (``expert_samples``) always, and rollouts that write the expert's step token for token.

    >>> merge_duplicates([("p", (1, 2), 1.0), ("p", (1, 2), 1.0), ("p", (3,), 1.0), ("q", (1, 2), 1.0)])
    ([0, 2, 3], [2.0, 1.0, 1.0])
    """
    first: dict[Any, int] = {}
    rows: list[int] = []
    weights: list[float] = []
    for i, key in enumerate(keys):
        if key in first:
            weights[first[key]] += 1.0
        else:
            first[key] = len(rows)
            rows.append(i)
            weights.append(1.0)
    return rows, weights


def group_advantages(normalized: list[float], group_size: int, negative_weight: float = 1.0) -> list[float]:
    """Each group centred on its mean (a no-op after the ``group`` normalizer; after ``batch`` or
    ``running`` it is what TRL does after them), below-average rollouts scaled by ``negative_weight``.

    >>> group_advantages([1.0, -1.0, 3.0, 1.0], 2, negative_weight=0.5)
    [1.0, -0.5, 1.0, -0.5]
    """
    out: list[float] = []
    for g in range(0, len(normalized), group_size):
        group = normalized[g:g + group_size]
        mean = statistics.fmean(group)
        out += [a - mean if a >= mean else negative_weight * (a - mean) for a in group]
    return out


def ends_right(ids: list[int], last: bool, eos_id: int | None, stop_ids: set[int]) -> bool:
    """Whether a rollout ends as the expert's step does: the final step of a trajectory with EOS (a
    line break there means the policy would write a step the expert never wrote), any other step with
    a line break (EOS there ends the trajectory early). A rollout cut at the length limit is scored as
    it is. Without this, SRL on the final step teaches a line break where evaluation needs EOS.

    >>> [ends_right([5, 1], True, 1, {1, 2}), ends_right([5, 1], False, 1, {1, 2}), ends_right([5, 2], True, 1, {1, 2})]
    [True, False, False]
    >>> ends_right([5, 2], False, 1, {1, 2}), ends_right([5, 6], True, 1, {1, 2})
    (True, True)
    """
    if not ids:
        return True
    if eos_id is not None and ids[-1] == eos_id:
        return last
    if ids[-1] in stop_ids:
        return not last
    return True


def rollout_steps(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                  seed: int, batch_size: int, stop_ids: list[int]) -> list[list[int]]:
    """New token ids per prompt, each ending at its first stop token (kept) or at ``max_new_tokens``."""
    sample = pick_sampler(model)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    torch.manual_seed(seed)  # HF generate draws on the global RNG
    stops = set(stop_ids)
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=True).to(model.device)  # prompts rendered by the caller
            kwargs = {"generator": generator} if sample.__name__ == "sample_ids" else {}
            new = sample(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                         eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, temperature=temperature,
                         top_p=top_p, **kwargs)
            rows = new.tolist() if isinstance(new, torch.Tensor) else new
            for row in rows:  # HF pads finished rows: cut each at its first stop
                cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
                out.append(row[:cut])
    finally:
        model.train(was_training)
    return out


def token_logprobs(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                   temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (B, T) of each completion token under ``softmax(logits / temperature)`` (the
    distribution it was drawn from), with a mask of the real completion tokens. Right-padded."""
    seqs = [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)]
    width = max(len(s) for s in seqs)
    device = model.device
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros_like(ids)
    target_mask = torch.zeros(len(seqs), width - 1, dtype=torch.float32, device=device)
    for i, (p, s) in enumerate(zip(prompt_ids, seqs)):
        ids[i, :len(s)] = torch.tensor(s, device=device)
        attention[i, :len(s)] = 1
        target_mask[i, len(p) - 1:len(s) - 1] = 1.0  # position t predicts token t + 1
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp, target_mask


class StepGRPOTrainer:
    def __init__(self, config: StepSRLConfig):
        self.config = config

    def _checkpoints(self, folder: Path) -> list[tuple[int, Path]]:
        return numbered_checkpoints(folder, lambda p: (p / STATE_FILE).is_file())

    def train(self, model_path: str, rows: list[dict[str, str]], work_dir: Path, out_dir: Path,
              on_log: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Train from ``model_path`` on step instances ``rows`` ({prompt, target}); write to ``out_dir``."""
        from srl_assets.srl.step_reward import score_step

        cfg = self.config
        if not rows:
            raise ValueError("SRL needs at least one step instance (the srl_steps table is empty?)")
        bad = [i for i, r in enumerate(rows) if not r.get("prompt") or not str(r.get("target", "")).strip()]
        if bad:
            raise ValueError(f"SRL rows {bad[:5]} lack a prompt or a target step")
        report = on_log or (lambda row: None)
        torch.manual_seed(cfg.seed)
        trainer_dir = work_dir / "trainer"
        found = self._checkpoints(trainer_dir)
        resumed_from = str(found[-1][1]) if found else None
        model, tokenizer = load_model(resumed_from or model_path)
        model.train()
        reference = None
        if cfg.beta > 0:
            reference, _ = load_model(model_path)
            reference.eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
        warmup = round(cfg.warmup_ratio * cfg.max_steps)
        controller: KLController = cfg.make_kl_controller()
        normalizer = make_normalizer(cfg.normalizer)
        log: list[dict[str, Any]] = []
        kl_history: list[dict[str, float]] = []
        start_step = 0
        if resumed_from:
            state = json.loads((Path(resumed_from) / STATE_FILE).read_text())
            optimizer.load_state_dict(torch.load(Path(resumed_from) / "optimizer.pt", weights_only=True))
            controller.load_state_dict(state["controller"])
            if "normalizer" in state:  # a `running` normalizer's moments (absent in older checkpoints)
                normalizer.load_state_dict(state["normalizer"])
            log, kl_history, start_step = state["log"], state["kl_history"], state["step"]
        stop_ids = line_break_ids(tokenizer)
        stop_set = set(stop_ids)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        n, per_step = cfg.num_generations, cfg.prompts_per_step
        m = n - cfg.expert_samples  # rollouts per prompt; the group's other members are the expert's step
        is_expert = [i % n >= m for i in range(per_step * n)]
        started = time.perf_counter()
        generated_tokens = sum(int(r.get("tokens", 0)) for r in log)
        for step in range(start_step, cfg.max_steps):
            batch = self._prompts_for(step, rows)
            prompts = [r["prompt"] for r in batch for _ in range(n)]
            # What the model reads: the checkpoint's prompt contract (raw text, or its chat template).
            rendered = [render_prompt(tokenizer, p) for p in prompts]
            sampled = rollout_steps(model, tokenizer, [p for i, p in enumerate(rendered) if not is_expert[i]],
                                    cfg.max_completion_length, cfg.temperature, cfg.top_p,
                                    cfg.seed * 100_003 + step, cfg.rollout_batch_size, stop_ids)
            completions = []
            for g, r in enumerate(batch):
                completions += sampled[g * m:(g + 1) * m]
                if cfg.expert_samples:
                    expert = expert_completion(tokenizer, r["prompt"], r["target"], bool(r.get("last", False)))
                    completions += [expert] * cfg.expert_samples
            texts = tokenizer.batch_decode(completions, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            raw = [score_step(step_text(prompts[i], t), batch[i // n]["target"], cfg.reward)
                   if ends_right(completions[i], bool(batch[i // n].get("last", False)), tokenizer.eos_token_id,
                                 stop_set)
                   else FORMAT_VIOLATION_REWARD for i, t in enumerate(texts)]
            groups = [raw[g * n:(g + 1) * n] for g in range(per_step)]
            informative = [group_std(g) > cfg.dynamic_sampling_eps for g in groups]
            if cfg.update == "rft":  # rejection sampling: a likelihood step on the members that match
                advantages = [1.0] * len(raw)
                keep = [i for i in range(len(raw)) if raw[i] >= cfg.keep_reward and completions[i]]
            else:
                advantages = group_advantages(normalizer.normalize(raw, n), n, cfg.negative_weight)
                keep = [i for i in range(len(raw)) if informative[i // n] and completions[i]]
            loss_value, kl_value = 0.0, 0.0
            # Linear warmup indexed by the step, so a resumed run and a step without an update keep the schedule.
            lr = cfg.learning_rate * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if keep:
                firsts, weights = merge_duplicates([(rendered[i], tuple(completions[i]), advantages[i])
                                                    for i in keep])
                train = [keep[j] for j in firsts]
                prompt_ids = [tokenizer(rendered[i], add_special_tokens=True)["input_ids"] for i in train]
                loss_value, kl_value = self._update(model, reference, optimizer, prompt_ids,
                                                    [completions[i] for i in train],
                                                    [advantages[i] for i in train], pad_id, controller.value,
                                                    weights)
            if cfg.beta > 0:
                controller.update(kl_value, len(raw))
                kl_history.append({"step": step + 1, "kl": kl_value, "beta": controller.value})
            tokens = sum(len(c) for c in sampled)
            generated_tokens += tokens
            own = [r for i, r in enumerate(raw) if not is_expert[i]]  # the policy's rollouts only
            row = {"step": step + 1, "raw_reward_mean": statistics.fmean(own),
                   "exact_step_rate": sum(r >= 1.0 for r in own) / len(own),
                   "format_violation_rate": sum(r < 0 for r in own) / len(own),
                   "informative_groups": sum(informative), "loss": loss_value, "kl": kl_value, "tokens": tokens,
                   "learning_rate": lr}
            if cfg.update == "rft":
                row["kept_rollouts"] = sum(not is_expert[i] for i in keep)
            elif cfg.expert_samples:
                guided = [advantages[i] for i in keep if is_expert[i]]
                row["expert_advantage_mean"] = statistics.fmean(guided) if guided else 0.0
            log.append(row)
            report(row)
            if step + 1 == cfg.max_steps or (step + 1) * 20 // cfg.max_steps > step * 20 // cfg.max_steps:
                report({"event": "progress", "step": step + 1, "total": cfg.max_steps, "what": "SRL steps"})
            if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < cfg.max_steps:
                self._save(model, tokenizer, optimizer, controller, normalizer, log, kl_history, step + 1,
                           trainer_dir)
        save_model(model, tokenizer, out_dir)
        raw_history = [r["raw_reward_mean"] for r in log]
        return {"stage": "srl", "trainer": "step_grpo", "config": asdict(cfg), "resumed_from": resumed_from,
                "steps": len(log), "processes": 1, "rollouts_per_step": per_step * m, "log": log,
                "kl_history": kl_history, "final_beta": controller.value if cfg.beta > 0 else 0.0,
                "raw_reward_history": raw_history, "normalizer_stats": normalizer.stats(),
                "generated_tokens": generated_tokens, "train_seconds": round(time.perf_counter() - started, 2),
                "format_violation_rate": statistics.fmean(r["format_violation_rate"] for r in log) if log else 0.0}

    def _prompts_for(self, step: int, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """The step's prompts: passes over the rows, each in its own seeded order (resume-safe)."""
        per_step = self.config.prompts_per_step
        picked: list[dict[str, str]] = []
        position = step * per_step
        while len(picked) < per_step:
            epoch, offset = divmod(position, len(rows))
            order = list(range(len(rows)))
            random.Random(self.config.seed * 7919 + epoch).shuffle(order)
            take = min(per_step - len(picked), len(rows) - offset)
            picked.extend(rows[i] for i in order[offset:offset + take])
            position += take
        return picked

    def _update(self, model, reference, optimizer, prompt_ids, completion_ids, advantages, pad_id,
                beta: float, weights: list[float] | None = None) -> tuple[float, float]:
        """One optimizer step: token-level mean of -A * log p (+ beta * KL to the start), in micro-batches.
        ``weights``: how many identical members each row stands for (``merge_duplicates``); 1 each if None."""
        cfg = self.config
        weights = weights or [1.0] * len(completion_ids)
        total_tokens = sum(w * len(c) for w, c in zip(weights, completion_ids, strict=True))
        micro = cfg.micro_batch_size or len(completion_ids)
        optimizer.zero_grad(set_to_none=True)
        loss_sum, kl_sum = 0.0, 0.0
        for s in range(0, len(completion_ids), micro):
            p, c = prompt_ids[s:s + micro], completion_ids[s:s + micro]
            adv = torch.tensor(advantages[s:s + micro], dtype=torch.float32, device=model.device).unsqueeze(1)
            w = torch.tensor(weights[s:s + micro], dtype=torch.float32, device=model.device).unsqueeze(1)
            logp, mask = token_logprobs(model, p, c, pad_id, cfg.temperature)
            per_token = -adv * logp
            if reference is not None:
                with torch.no_grad():
                    ref_logp, _ = token_logprobs(reference, p, c, pad_id, cfg.temperature)
                delta = ref_logp - logp
                kl = torch.exp(delta) - delta - 1.0  # k3 estimator, as TRL's GRPO
                per_token = per_token + beta * kl
                kl_sum += float((w * kl.detach() * mask).sum())
            loss = (w * per_token * mask).sum() / total_tokens
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        return loss_sum, kl_sum / total_tokens

    def _save(self, model, tokenizer, optimizer, controller, normalizer, log, kl_history, step: int,
              folder: Path) -> None:
        final = folder / f"checkpoint-{step}"
        tmp = folder / f"checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(model, tokenizer, tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / STATE_FILE).write_text(json.dumps({"step": step,
                                                  "controller": controller.state_dict(),
                                                  "normalizer": normalizer.state_dict(), "log": log,
                                                  "kl_history": kl_history}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, old in self._checkpoints(folder)[:-2]:  # keep the last two
            shutil.rmtree(old, ignore_errors=True)

