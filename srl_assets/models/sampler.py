"""A lean batched sampler for Llama-shaped causal LMs: the rollouts of SRL, RLVR and evaluation.

At the tiny default's size (0.14M parameters) Hugging Face ``generate`` spends most of each step in
Python: logits processors, stopping criteria, cache objects, mask construction. This sampler runs the
same Llama arithmetic with plain tensor ops over the model's own weights:

- one forward per step over the whole batch, the KV cache preallocated once (HF's cache grows by a
  copy every step);
- left-padded prompts keep their real positions (``cumsum(mask) - 1``, as HF does) and pad keys are
  masked, so every row writes its key/value at the same cache column each step;
- q/k/v and gate/up are fused into one matmul each, each RMSNorm's weight is folded into the matmul
  after it, and rotary embedding is folded into the q/k weights (``rotate_half(x) = x @ R`` with ``R``
  a signed permutation, so ``W @ R`` is exact), as are the attention scale (into the query columns)
  and, when sampling, ``1 / T`` (into the output head); grouped-query heads share their cache rows;
- decoding (one token per row) runs its own short op sequence (``LlamaSampler.decode``) with the
  key cache stored transposed, which makes the score product stream rows of contiguous floats;
- rows that wrote EOS leave the batch in bulk, once dropping them saves more than copying the cache
  costs, so a batch of rollouts that stop at different lengths costs mostly the rows still running;
  EOS is looked for every few steps, not every step (each row is cut at its first stop token);
- greedy is ``argmax``; sampling draws from ``softmax(logits / T)`` (HF's nucleus cut when
  ``top_p < 1``) by inverting the CDF with one uniform per row and step, all drawn up front from the
  seeded RNG (torch's global one unless a ``torch.Generator`` is passed) and indexed by the original
  row, the distribution ``torch.multinomial`` draws from.

At the demo's shape most of a step is attention reading the float32 cache (two batched products per
layer, about 60% of the time in a profile); the rest is ~50 small ops. ``benchmarks/rollout_throughput.py``
measures HF ``generate`` and this sampler side by side.

The distribution is the model's: ``tests/test_sampler.py`` checks each step's probabilities against a
plain full forward pass of the model, greedy tokens against HF ``generate``, and sampled frequencies
against the probabilities. Other architectures (Qwen's biased q/k/v, per-head norms, rope scaling)
fall back to HF ``generate``: ``unsupported_reason`` says why.

>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
...                   num_attention_heads=2, num_key_value_heads=2, eos_token_id=1, pad_token_id=0)
>>> model = LlamaForCausalLM(cfg).eval()
>>> ids = torch.tensor([[0, 5, 6], [7, 8, 9]]); mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
>>> [len(r) <= 4 for r in sample_ids(model, ids, mask, max_new_tokens=4, eos_token_id=1)]
[True, True]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from srl_assets.registry import Registry

log = logging.getLogger(__name__)

# name -> fn(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, temperature,
# top_p) -> new token ids per row (a list of lists or a padded tensor; both decode the same).
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
SAMPLER_ENV = "SRL_SAMPLER"
# `auto` picks the lean sampler up to this size: it copies the weights into fused matrices per call,
# which a big model on a GPU pays for and HF's per-step overhead (small next to its matmuls) does not.
AUTO_MAX_PARAMETERS = 100_000_000

# Generation settings (and their neutral values) under which HF generate would do more than this sampler:
# a logits processor or beam search.
_UNSUPPORTED_GENERATION = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
    "min_new_tokens": None, "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "min_p": None, "encoder_repetition_penalty": 1.0, "renormalize_logits": False,
    "num_beams": 1,
}

StepHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def unsupported_reason(model) -> str | None:
    """Why this sampler cannot reproduce ``model``'s own generation (None: it can)."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) != "llama":
        return f"model_type {getattr(cfg, 'model_type', None)!r} is not 'llama'"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "attention_bias/mlp_bias are set"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r} is not 'silu'"
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope_type {rope.get('rope_type')!r} is not 'default'"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp is not 1"
    return generation_config_reason(getattr(model, "generation_config", None))


def generation_config_reason(gen) -> str | None:
    """Why HF ``generate`` under this ``GenerationConfig`` would do more than this sampler (None: it
    would not): a logits processor or beam search."""
    for name, neutral in _UNSUPPORTED_GENERATION.items():
        value = getattr(gen, name, neutral)
        if value not in (neutral, None):
            return f"generation_config.{name} = {value!r} changes what HF generate does"
    return None


@dataclass
class _Layer:
    w_qkv: torch.Tensor       # (hidden, q + kv + kv + q + kv): q, k, v, then q@R and k@R for rotary
    w_o: torch.Tensor         # (q, hidden)
    w_gate_up: torch.Tensor   # (hidden, 2 * intermediate)
    w_down: torch.Tensor      # (intermediate, hidden)


class LlamaSampler:
    """The model's weights, fused for decoding. Build one per ``sample`` call: training changes them."""

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"LlamaSampler cannot sample this model: {reason}")
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        self.rotary = model.model.rotary_emb
        inner = model.model
        self.embed = inner.embed_tokens.weight
        hidden = self.embed.shape[1]
        # RMSNorm(h) = h / sqrt(mean(h^2) + eps) = sqrt(n) * h / sqrt(sum(h^2) + n * eps): `_normed` takes
        # the sum (``mean`` on CPU is a sum, a division and two scalar copies) and sqrt(n) joins each norm's
        # weight, folded into the rows of the matmul that follows it.
        # A 0-dim tensor, not a Python float: ``add_(float)`` wraps and copies the scalar on every call (five
        # norms per decode step; ~1 us each at the demo's shape).
        self.n_eps = torch.tensor(hidden * self.eps, dtype=self.embed.dtype, device=self.embed.device)
        root_n = hidden ** 0.5
        self.w_lm = (root_n * inner.norm.weight[:, None] * model.lm_head.weight.t()).contiguous()  # (hidden, vocab)
        rot = _rotate_half_matrix(self.head_dim, self.embed.dtype, self.embed.device)
        self.layers = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            # The attention scale is folded into the query columns (exact for a power-of-two head_dim).
            wq, wk, wv = att.q_proj.weight.t() * self.scale, att.k_proj.weight.t(), att.v_proj.weight.t()
            wq_rot = (wq.reshape(-1, self.heads, self.head_dim) @ rot).reshape(wq.shape)
            wk_rot = (wk.reshape(-1, self.kv_heads, self.head_dim) @ rot).reshape(wk.shape)
            self.layers.append(_Layer(
                w_qkv=root_n * layer.input_layernorm.weight[:, None] * torch.cat(
                    [wq, wk, wv, wq_rot, wk_rot], dim=1),
                w_o=att.o_proj.weight.t().contiguous(),
                w_gate_up=root_n * layer.post_attention_layernorm.weight[:, None] * torch.cat(
                    [mlp.gate_proj.weight.t(), mlp.up_proj.weight.t()], dim=1),
                w_down=mlp.down_proj.weight.t().contiguous()))
        self.inter = self.layers[0].w_down.shape[0] if self.layers else 0

    def _normed(self, h: torch.Tensor) -> torch.Tensor:
        """LlamaRMSNorm without its weight and without sqrt(hidden) (both folded into the next matmul).
        Not ``F.rms_norm``: on CPU that is the same ops plus two dtype copies."""
        return h * (h * h).sum(-1, keepdim=True).add_(self.n_eps).rsqrt_()

    def forward(self, ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_k: list[torch.Tensor],
                cache_v: list[torch.Tensor], start: int, mask: torch.Tensor) -> torch.Tensor:
        """Logits of the last position.

        ids (B, q); cos/sin (B, 1, q, hd); caches (B * kv_heads, T_max, hd), written at columns
        [start, start + q); mask (B * kv_heads, 1 or rep * q, start + q), additive, where the ``rep``
        query heads that share a key/value head are stacked along the query axis (grouped attention
        without repeating the cache).
        """
        b, q = ids.shape
        nq, nkv, hd = self.heads, self.kv_heads, self.head_dim
        rep, end = nq // nkv, start + q
        h = F.embedding(ids.reshape(-1), self.embed)                              # (B*q, hidden) residual
        for i, layer in enumerate(self.layers):
            x = (self._normed(h) @ layer.w_qkv).view(b, q, -1, hd).transpose(1, 2)  # (B, 2nq + 3nkv, q, hd)
            # q/k and their rotate_half images come out of the same matmul: x*cos + rot(x)*sin.
            qk = torch.addcmul(x[:, :nq + nkv] * cos, x[:, nq + 2 * nkv:], sin)   # (B, nq + nkv, q, hd)
            cache_k[i].view(b, nkv, -1, hd)[:, :, start:end] = qk[:, nq:]
            cache_v[i].view(b, nkv, -1, hd)[:, :, start:end] = x[:, nq + nkv:nq + 2 * nkv]
            queries = qk[:, :nq].reshape(b * nkv, rep * q, hd)
            scores = torch.baddbmm(mask, queries, cache_k[i][:, :end].transpose(1, 2))
            att = torch.bmm(torch.softmax(scores, dim=-1), cache_v[i][:, :end])     # (B*nkv, rep*q, hd)
            h = torch.addmm(h, att.view(b, nq, q, hd).transpose(1, 2).reshape(b * q, nq * hd), layer.w_o)
            gate, up = (self._normed(h) @ layer.w_gate_up).split(self.inter, dim=-1)
            h = torch.addmm(h, F.silu(gate) * up, layer.w_down)
        return self._normed(h.view(b, q, -1)[:, -1]) @ self.w_lm                  # (B, vocab)

    def decode(self, tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_kt: list[torch.Tensor],
               cache_v: list[torch.Tensor], col: int, mask: torch.Tensor, w_lm: torch.Tensor) -> torch.Tensor:
        """``forward`` for one new token per row: (B,) tokens at cache column ``col``, cos/sin (B, 1, hd),
        mask (B * kv_heads, 1, col + 1); returns ``normed(h) @ w_lm`` (B, vocab).

        The key cache is stored transposed here, (B * kv_heads, hd, T): the scores are then a product
        with rows of T contiguous floats instead of T dot products of head_dim (16) floats. Attention over
        the float32 cache is most of a decode step at the tiny default's size; with this layout and the
        shorter op sequence the whole sampler measured 1.07-1.29x faster than with ``forward`` per step
        (batch 16-256, same process).
        """
        b = tokens.shape[0]
        nq, nkv, hd = self.heads, self.kv_heads, self.head_dim
        rep, end, qk_heads = nq // nkv, col + 1, nq + nkv
        h = F.embedding(tokens, self.embed)                                         # (B, hidden)
        for i, layer in enumerate(self.layers):
            x = (self._normed(h) @ layer.w_qkv).view(b, -1, hd)                    # (B, 2nq + 3nkv, hd)
            qk = torch.addcmul(x[:, :qk_heads] * cos, x[:, qk_heads + nkv:], sin)  # (B, nq + nkv, hd)
            cache_kt[i].view(b, nkv, hd, -1)[:, :, :, col] = qk[:, nq:]
            cache_v[i].view(b, nkv, -1, hd)[:, :, col] = x[:, qk_heads:qk_heads + nkv]
            queries = qk[:, :nq].reshape(b * nkv, rep, hd)
            scores = torch.baddbmm(mask, queries, cache_kt[i][:, :, :end])
            att = torch.bmm(torch.softmax(scores, dim=-1), cache_v[i][:, :end])     # (B*nkv, rep, hd)
            h = torch.addmm(h, att.view(b, nq * hd), layer.w_o)
            gate_up = self._normed(h) @ layer.w_gate_up
            h = torch.addmm(h, F.silu(gate_up[:, :self.inter]).mul_(gate_up[:, self.inter:]), layer.w_down)
        return self._normed(h) @ w_lm


def _rotate_half_matrix(dim: int, dtype: torch.dtype, device) -> torch.Tensor:
    """R with ``x @ R == rotate_half(x) == cat(-x[half:], x[:half])``: a signed permutation."""
    half = dim // 2
    rot = torch.zeros(dim, dim, dtype=dtype, device=device)
    rot[torch.arange(half, dim), torch.arange(half)] = -1.0
    rot[torch.arange(half), torch.arange(half, dim)] = 1.0
    return rot


def _next_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """HF's sampling distribution: temperature, then the nucleus cut (at least one token kept)."""
    scores = logits / temperature if temperature != 1.0 else logits
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p)
        drop[..., -1:] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.softmax(scores, dim=-1)


def pick_sampler(model, name: str | None = None) -> Callable[..., Any]:
    """The sampler called ``name`` (default: $SRL_SAMPLER, else ``auto``): ``fast`` (this module's),
    ``hf`` (HF ``generate``), or ``auto``: ``fast`` when it supports the model and the model has at
    most ``AUTO_MAX_PARAMETERS``, else ``hf``."""
    name = name or os.environ.get(SAMPLER_ENV) or "auto"
    reason = unsupported_reason(model) if name in ("auto", "fast") else None
    if name == "auto":
        size = sum(p.numel() for p in model.parameters())
        if not reason and size > AUTO_MAX_PARAMETERS:
            reason = f"{size} parameters (auto uses it up to {AUTO_MAX_PARAMETERS})"
        if reason:
            log.debug("HF generate samples this model: %s", reason)
        name = "hf" if reason else "fast"
    elif name == "fast" and reason:
        raise ValueError(f"sampler 'fast' cannot sample this model ({reason}); use 'hf' or 'auto'")
    elif name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r} (argument or ${SAMPLER_ENV}); valid names: "
                         f"{['auto', *SAMPLERS.names()]}")
    return SAMPLERS.get(name)


@SAMPLERS.register("hf")
def hf_sample_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  eos_token_id: int | list[int] | None, pad_token_id: int | None = None, temperature: float = 0.0,
                  top_p: float = 1.0) -> torch.Tensor:
    """HF ``generate`` (plain sampling, top-k off) on torch's global RNG: (batch, new) padded after EOS."""
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                          pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                          **sampling)[:, input_ids.shape[1]:]  # left padding aligns all prompts' ends


@SAMPLERS.register("fast")
@torch.inference_mode()
def sample_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
               eos_token_id: int | list[int] | None, pad_token_id: int | None = None, temperature: float = 0.0,
               top_p: float = 1.0, generator: torch.Generator | None = None,
               on_step: StepHook | None = None, compact_after: float = 8.0,
               check_every: int = 4) -> list[list[int]]:
    """New token ids for each left-padded prompt row (EOS included when a row writes it).

    Draws on ``generator`` (default: torch's global RNG, which ``torch.manual_seed`` seeds, as for HF).
    ``on_step(rows, probs, tokens)`` (a test hook) sees, each step, the original row indices still
    running, the distribution each was drawn from (one-hot argmax when greedy) and the drawn tokens.
    ``eos_token_id`` may be a list: a row ends at the first of them it writes (HF ``generate`` takes the
    same; SRL ends a step at any token holding a line break).
    ``pad_token_id`` is unused: rows end at their EOS instead of being padded. Finished rows leave the
    batch once dropping them saves ``compact_after`` full-batch steps (finished rows x steps left),
    about what copying the cache costs; 0 drops them at once. Rows are checked for EOS every
    ``check_every`` steps (every step when ``on_step`` is given); the output is the same either way.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must be the same (batch, length)")
    batch, prompt_len = input_ids.shape
    if max_new_tokens <= 0 or batch == 0:
        return [[] for _ in range(batch)]
    if bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("prompts must be left-padded (a row ends in padding)")
    sampler = LlamaSampler(model)
    device, dtype = input_ids.device, sampler.embed.dtype
    stop_ids = None if eos_token_id is None else torch.tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), dtype=torch.long, device=device)
    total = prompt_len + max_new_tokens

    valid = attention_mask.bool()
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)               # HF's position ids
    cos_table, sin_table = sampler.rotary(
        sampler.embed[:1], torch.arange(total, device=device).unsqueeze(0))        # (1, total, hd)
    cos_table, sin_table = cos_table[0], sin_table[0]

    nkv, rep = sampler.kv_heads, sampler.heads // sampler.kv_heads
    # Additive key mask over the whole cache, one row per (prompt, kv head): pads -inf, the rest 0.
    key_mask = torch.zeros(batch, nkv, 1, total, dtype=dtype, device=device)
    key_mask[..., :prompt_len].masked_fill_(~valid[:, None, None, :], float("-inf"))
    key_mask = key_mask.view(batch * nkv, 1, total)
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    # Pads may attend to themselves: a row with no visible key would turn into NaN and poison the cache.
    allowed = (causal & valid[:, None, :]) | torch.eye(prompt_len, dtype=torch.bool, device=device)
    prefill_mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
    prefill_mask = prefill_mask[:, None, None].expand(batch, nkv, rep, prompt_len, prompt_len).reshape(
        batch * nkv, rep * prompt_len, prompt_len)

    hd = sampler.head_dim
    prompt_k = [torch.empty(batch * nkv, prompt_len, hd, dtype=dtype, device=device) for _ in sampler.layers]
    cache_v = [torch.empty(batch * nkv, total, hd, dtype=dtype, device=device) for _ in sampler.layers]
    logits = sampler.forward(input_ids, cos_table[positions].unsqueeze(1), sin_table[positions].unsqueeze(1),
                             prompt_k, cache_v, 0, prefill_mask)                  # (B, vocab)
    # Decoding keeps keys transposed (see LlamaSampler.decode).
    cache_k = [torch.empty(batch * nkv, hd, total, dtype=dtype, device=device) for _ in sampler.layers]
    for kt, k in zip(cache_k, prompt_k, strict=True):
        kt[:, :, :prompt_len] = k.transpose(1, 2)
    del prompt_k

    greedy = temperature <= 0
    if not greedy:  # HF's logits / T: the prefill's once, the decode's folded into the head's weights
        logits = logits / temperature
    w_lm = sampler.w_lm if greedy else sampler.w_lm / temperature
    # One uniform per row and step, drawn up front (one op, not one per step), indexed by the original
    # row: the tokens do not depend on when finished rows leave the batch (``check_every``, ``compact_after``).
    # A compaction keeps the columns of the rows that stay, for the steps from ``first`` (below) on.
    uniforms = None if greedy else torch.rand(max_new_tokens, batch, 1, generator=generator, device=device,
                                              dtype=torch.float32)
    # EOS is looked for every `check_every` steps: a finished row runs a few steps more (cut at its first
    # stop token below), which costs less than the per-step check. The test hook needs every step.
    check_every = 1 if on_step is not None else max(1, check_every)
    out = torch.full((batch, max_new_tokens), -1, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)                                       # original index per row
    alive = torch.ones(batch, dtype=torch.bool, device=device)                      # not yet at EOS
    pending: list[torch.Tensor] = []    # tokens of steps [first, step], not yet written to `out`
    first = 0                           # the last compaction's next step: `uniforms` starts there
    # Each row's rotary angles for every new token, looked up once: step s reads column s.
    new_pos = positions[:, -1:] + 1 + torch.arange(max_new_tokens, device=device)   # (B, new)
    cos_new, sin_new = cos_table[new_pos], sin_table[new_pos]                       # (B, new, hd)
    for step in range(max_new_tokens):
        u = None if greedy else uniforms[step - first]
        tokens, probs = _draw(logits, greedy, top_p, u, want_probs=on_step is not None)
        if on_step is not None:
            on_step(rows[alive], probs[alive], tokens[alive])
        pending.append(tokens)
        if step + 1 == max_new_tokens:
            break
        # Rows that wrote EOS stop counting; once enough of them have, they leave the batch (cache,
        # mask and positions keep the running rows). Dropping in bulk keeps the copies rare.
        if stop_ids is not None and (step + 1) % check_every == 0:
            recent = torch.stack(pending[-check_every:], dim=1)                      # (B, check_every)
            done = _is_stop(recent, stop_ids).any(dim=1) & alive
            if bool(done.any()):
                alive &= ~done
                running = int(alive.sum())
                if running == 0:
                    break
                if (alive.numel() - running) * (max_new_tokens - step - 1) >= compact_after * alive.numel():
                    keep = alive.nonzero().squeeze(1)
                    out[rows, first:step + 1] = torch.stack(pending, dim=1)
                    if uniforms is not None:  # the steps still to come, for the rows that stay
                        uniforms = uniforms[step + 1 - first:].index_select(1, keep)
                    pending, first = [], step + 1
                    used = prompt_len + step
                    rows, tokens, alive = rows[keep], tokens[keep], alive[keep]
                    cos_new, sin_new = cos_new[keep], sin_new[keep]
                    key_mask = key_mask.view(-1, nkv, 1, total).index_select(0, keep).view(-1, 1, total)
                    cache_k = [_keep_rows(c, keep, nkv, used, columns_last=True) for c in cache_k]
                    cache_v = [_keep_rows(c, keep, nkv, used) for c in cache_v]
        col = prompt_len + step
        logits = sampler.decode(tokens, cos_new[:, step:step + 1], sin_new[:, step:step + 1], cache_k, cache_v,
                                col, key_mask[..., :col + 1], w_lm)
    if pending:
        out[rows, first:first + len(pending)] = torch.stack(pending, dim=1)
    # A row ends at its first stop token (what it wrote after that, before the next check, is dropped);
    # unwritten columns (-1) lie past the end of rows that left the batch.
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    if stop_ids is not None:
        hits = _is_stop(out, stop_ids)
        lengths = torch.where(hits.any(dim=1), hits.int().argmax(dim=1) + 1, lengths)
    out_list = out.cpu().tolist()
    return [r[:n] for r, n in zip(out_list, lengths.tolist(), strict=True)]


def _is_stop(tokens: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    return tokens == stop_ids[0] if stop_ids.numel() == 1 else torch.isin(tokens, stop_ids)


def _keep_rows(t: torch.Tensor, keep: torch.Tensor, kv_heads: int, used: int,
               columns_last: bool = False) -> torch.Tensor:
    """Rows ``keep`` of a (batch * kv_heads, T, hd) tensor (``columns_last``: (batch * kv_heads, hd, T)),
    in a fresh buffer of the same T whose first ``used`` columns (the ones written so far) are copied."""
    grouped = t.view(-1, kv_heads, *t.shape[1:])
    out = torch.empty((keep.numel(), *grouped.shape[1:]), dtype=t.dtype, device=t.device)
    if columns_last:
        out[..., :used] = grouped[..., :used].index_select(0, keep)
    else:
        out[:, :, :used] = grouped[:, :, :used].index_select(0, keep)
    return out.view(-1, *t.shape[1:])


def _draw(logits: torch.Tensor, greedy: bool, top_p: float, u: torch.Tensor | None,
          want_probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next tokens (B,) from logits already divided by the temperature, with uniforms ``u`` (B, 1), and,
    when wanted, the distribution they were drawn from (one-hot when greedy).

    Sampling inverts the CDF with one uniform per row: the same distribution as ``torch.multinomial``
    at a fraction of its cost on CPU (which draws an exponential per vocabulary entry).
    """
    if greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, F.one_hot(tokens, logits.shape[-1]).float() if want_probs else None
    probs = _next_probs(logits.float(), 1.0, top_p)
    cdf = probs.cumsum(dim=-1)
    # First index whose cumulative mass exceeds u: a zero-probability token is never it.
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)
    return tokens, probs if want_probs else None
