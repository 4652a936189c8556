"""The lean sampler draws from the model's own distribution: per-step probabilities against a plain
full forward pass, greedy tokens against HF generate, sampled frequencies against the probabilities."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM, TemperatureLogitsWarper, TopPLogitsWarper

import srl_assets.models.sampler as sampler_module
from srl_assets.models.sampler import SAMPLER_ENV, hf_sample_ids, pick_sampler, sample_ids, unsupported_reason
from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, generate, train_bpe_tokenizer

PAD, EOS = 0, 2


def llama(kv_heads: int = 2, seed: int = 0, **extra) -> LlamaForCausalLM:
    # A wide init makes the distributions peaked, so a wrong temperature or a shifted position shows.
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                      initializer_range=0.25, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=1, **extra)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


PROMPTS = [[1, 5, 9, 3, 7, 11, 4], [1, 6], [1, 8, 8, 12], [1, 30, 21, 5, 5], [1, 3, 3], [1, 17, 4, 9, 22, 13]]


def reference_probs(model, prompt: list[int], new: list[int], temperature: float, top_p: float) -> torch.Tensor:
    """softmax(logits / T) (nucleus-cut as HF does) of one plain forward pass over prompt + new, no cache."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + new])).logits[0, len(prompt) - 1:len(prompt) - 1 + len(new)]
    scores = TemperatureLogitsWarper(temperature)(None, logits)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


@pytest.mark.parametrize("kv_heads,temperature,top_p", [
    (2, 0.7, 1.0),   # grouped-query attention, the demo's temperature
    (4, 0.7, 1.0),   # one key/value head per query head, as the tiny default
    (2, 1.3, 0.8),   # nucleus sampling
])
def test_each_step_draws_from_the_models_own_distribution(kv_heads, temperature, top_p):
    model = llama(kv_heads)
    ids, mask = left_padded(PROMPTS)
    seen: dict[int, list[torch.Tensor]] = {r: [] for r in range(len(PROMPTS))}

    def record(rows, probs, tokens):
        for row, p in zip(rows.tolist(), probs, strict=True):
            seen[row].append(p.clone())

    out = sample_ids(model, ids, mask, max_new_tokens=24, eos_token_id=EOS, temperature=temperature, top_p=top_p,
                     generator=torch.Generator().manual_seed(3), on_step=record, compact_after=0.0)
    assert any(len(r) < 24 and r[-1] == EOS for r in out), "no row stopped early: the seed no longer tests compaction"
    for row, (prompt, new) in enumerate(zip(PROMPTS, out, strict=True)):
        assert EOS not in new[:-1]
        assert len(seen[row]) == len(new)
        got = torch.stack(seen[row])
        assert (got - reference_probs(model, prompt, new, temperature, top_p)).abs().max() < 1e-5


def test_a_shifted_position_or_another_temperature_fails_the_comparison():
    """The comparison above can fail: the reference one token off, or at T=1, differs by far more than 1e-5."""
    model = llama()
    prompt = PROMPTS[0]
    ids, mask = left_padded([prompt])
    seen = []
    new = sample_ids(model, ids, mask, max_new_tokens=6, eos_token_id=None, temperature=0.7,
                     generator=torch.Generator().manual_seed(0), on_step=lambda r, p, t: seen.append(p[0]))[0]
    got = torch.stack(seen)
    assert (got - reference_probs(model, prompt, new, 0.7, 1.0)).abs().max() < 1e-5
    assert (got - reference_probs(model, prompt, new, 1.0, 1.0)).abs().max() > 1e-2
    shifted = reference_probs(model, prompt[:-1], [prompt[-1], *new[:-1]], 0.7, 1.0)
    assert (got - shifted).abs().max() > 1e-2


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_greedy_tokens_equal_hf_generate_with_left_padding(kv_heads):
    model = llama(kv_heads, seed=1)
    ids, mask = left_padded(PROMPTS)
    with torch.inference_mode():
        hf = hf_sample_ids(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD).tolist()
    ours = sample_ids(model, ids, mask, max_new_tokens=20, eos_token_id=EOS)
    for mine, theirs in zip(ours, hf, strict=True):
        assert mine == theirs[:len(mine)]
        assert all(t == PAD for t in theirs[len(mine):])  # HF pads a row after its EOS


def test_sampled_frequencies_match_the_probabilities():
    """20,000 first tokens from one prompt: a chi-square test against softmax(logits / 0.7) passes, and the
    same draws are rejected against the distribution at T = 1 (so the test can tell them apart)."""
    model = llama()
    prompt = PROMPTS[3]
    n = 20_000
    ids, mask = left_padded([prompt] * n)
    out = sample_ids(model, ids, mask, max_new_tokens=1, eos_token_id=EOS, temperature=0.7,
                     generator=torch.Generator().manual_seed(11))
    counts = torch.bincount(torch.tensor([r[0] for r in out]), minlength=40).double()

    def p_value(probs: torch.Tensor) -> float:
        expected = probs.double() * n
        big = expected >= 5  # pool the rare tokens into one cell (when there are any)
        obs, exp = counts[big], expected[big]
        if not big.all():
            obs = torch.cat([obs, counts[~big].sum(0, keepdim=True)])
            exp = torch.cat([exp, expected[~big].sum(0, keepdim=True)])
        return float(chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)

    assert p_value(reference_probs(model, prompt, [0], 0.7, 1.0)[0]) > 1e-3
    assert p_value(reference_probs(model, prompt, [0], 1.0, 1.0)[0]) < 1e-6


@pytest.fixture(scope="module")
def tiny_policy():
    texts = ["Task: grow a fern in the shade\nPlan:\n1. **Climate** humid", "Task: a cactus\nPlan:\n",
             "2. **Soil** sandy, pH 6.5 to 7.5", "Task: an oak by the river, wide crown\nLore:\n\nPlan:\n"] * 4
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    cfg = TinyModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, intermediate_size=64, max_position_embeddings=256,
                          initializer_range=0.2)
    return build_tiny_model(tokenizer, cfg, seed=0), tokenizer, texts[:4]


def test_tiny_generate_picks_the_lean_sampler_and_keeps_hf_greedy_text(tiny_policy):
    model, tokenizer, prompts = tiny_policy
    assert pick_sampler(model) is sample_ids
    fast = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=3)
    assert fast == generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=3, sampler="hf")
    assert all(fast)


def test_tiny_generate_sampling_is_seeded_by_its_seed(tiny_policy):
    model, tokenizer, prompts = tiny_policy
    first = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.7, seed=5)
    assert generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.7, seed=5) == first
    assert generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.7, seed=6) != first


def test_sampler_choice_by_name_environment_and_model(monkeypatch):
    model = llama()
    assert pick_sampler(model, "hf") is hf_sample_ids
    monkeypatch.setenv(SAMPLER_ENV, "hf")
    assert pick_sampler(model) is hf_sample_ids
    monkeypatch.setenv(SAMPLER_ENV, "vllm")
    with pytest.raises(ValueError, match=r"unknown sampler 'vllm' \(argument or \$SRL_SAMPLER\).*'auto'"):
        pick_sampler(model)
    monkeypatch.delenv(SAMPLER_ENV)
    biased = llama(attention_bias=True)  # Qwen2-style q/k/v biases: not the arithmetic the lean sampler runs
    assert unsupported_reason(biased) == "attention_bias/mlp_bias are set"
    assert pick_sampler(biased) is hf_sample_ids
    with pytest.raises(ValueError, match="sampler 'fast' cannot sample this model"):
        pick_sampler(biased, "fast")
    monkeypatch.setattr(sampler_module, "AUTO_MAX_PARAMETERS", 1000)  # a big model: auto keeps HF generate
    assert pick_sampler(model) is hf_sample_ids
    assert pick_sampler(model, "fast") is sample_ids
    model.generation_config.repetition_penalty = 1.2
    assert unsupported_reason(model) == ("generation_config.repetition_penalty = 1.2 changes what HF "
                                         "generate does")


def test_right_padded_prompts_are_refused():
    model = llama()
    ids = torch.tensor([[1, 5, 0]])
    with pytest.raises(ValueError, match="left-padded"):
        sample_ids(model, ids, torch.tensor([[1, 1, 0]]), max_new_tokens=2, eos_token_id=EOS)


@pytest.mark.parametrize("eos", [EOS, [EOS, 7, 11]])
def test_tokens_do_not_depend_on_when_finished_rows_are_found_or_dropped(eos):
    """EOS is looked for every `check_every` steps and finished rows leave the batch in bulk; the uniforms are
    indexed by the original row, so every schedule writes the same tokens, each row cut at its first stop."""
    model = llama()
    ids, mask = left_padded(PROMPTS * 3)
    stops = {eos} if isinstance(eos, int) else set(eos)

    def run(check_every, compact_after):
        return sample_ids(model, ids, mask, max_new_tokens=30, eos_token_id=eos, temperature=0.9,
                          generator=torch.Generator().manual_seed(4), check_every=check_every,
                          compact_after=compact_after)

    reference = run(1, 1e9)  # every step checked, nobody dropped
    assert any(len(r) < 30 for r in reference), "no row stopped: the seed no longer tests early stops"
    for row in reference:
        assert not stops & set(row[:-1])
        assert len(row) == 30 or row[-1] in stops
    for check_every, compact_after in [(1, 0.0), (4, 0.0), (7, 1e9)]:
        assert run(check_every, compact_after) == reference, (check_every, compact_after)
