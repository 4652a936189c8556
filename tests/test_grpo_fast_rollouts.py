"""RLVR's GRPO (TRL's GRPOTrainer) samples its rollouts with the project's lean sampler: the same
completions as TRL's own HF generate path under greedy decoding, TRL's settings passed through, TRL's
path kept where the sampler would differ, and a real GRPO step trained through it."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

import srl_assets.training.grpo_common as grpo_common
from srl_assets.models.sampler import SAMPLER_ENV
from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, train_bpe_tokenizer
from srl_assets.training.configs import GRPOStageConfig
from srl_assets.training.grpo_common import FastRolloutGRPOTrainer

TEXTS = ["Task: grow a fern in the shade\nPlan:\n1. **Climate** humid", "Task: a cactus\nPlan:\n",
         "2. **Soil** sandy, pH 6.5 to 7.5", "Task: an oak by the river, wide crown\nPlan:\n"] * 4
PROMPTS = ["Task: grow a fern in the shade\nPlan:\n", "Task: a cactus\nPlan:\n",
           "Task: an oak by the river\nPlan:\n", "Task: a fern\nPlan:\n"]


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def make_trainer(tmp_path, **config) -> FastRolloutGRPOTrainer:
    tokenizer = train_bpe_tokenizer(TEXTS, vocab_size=300)
    # A wide init: peaked distributions, so greedy tokens are not near-ties between the two paths' arithmetic.
    model = build_tiny_model(tokenizer, TinyModelConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, initializer_range=0.2), seed=0)
    cfg = GRPOStageConfig(**{"max_steps": 1, "prompts_per_step": 2, "num_generations": 2,
                             "max_completion_length": 12, "save_steps": 10, **config})
    args = cfg.trl_config(tmp_path / "trainer", [], "test")
    return FastRolloutGRPOTrainer(model=model, reward_funcs=[length_reward], processing_class=tokenizer, args=args,
                                  train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]))


@pytest.fixture
def trainer(tmp_path):
    return make_trainer(tmp_path, temperature=0.7)


def prompt_ids(trainer) -> list[list[int]]:
    return [trainer.processing_class(p)["input_ids"] for p in PROMPTS]


def test_greedy_rollouts_equal_trls_own_generation(trainer, monkeypatch):
    trainer.generation_config.do_sample = False  # the greedy knob of TRL's generation config
    ids = prompt_ids(trainer)
    fast, fast_logprobs = trainer._generate_single_turn(ids, None, {}, 2)
    assert trainer.last_rollout_path == "fast"
    monkeypatch.setenv(SAMPLER_ENV, "hf")  # pick_sampler leaves the model to HF generate: TRL's path
    trl, trl_logprobs = trainer._generate_single_turn(ids, None, {}, 2)
    assert trainer.last_rollout_path == "trl"
    assert fast == trl and fast_logprobs is None and trl_logprobs is None
    assert all(0 < len(c) <= 12 for c in fast)


def test_sampling_passes_trls_settings_through(trainer, monkeypatch):
    calls = []
    real = grpo_common.sample_ids

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo_common, "sample_ids", spy)
    eos = trainer.processing_class.eos_token_id
    out, _ = trainer._generate_single_turn(prompt_ids(trainer), None, {}, 2)
    assert calls == [{"max_new_tokens": 12, "eos_token_id": list(trainer.eos_token_ids), "temperature": 0.7,
                      "top_p": 1.0}]
    assert eos in trainer.eos_token_ids
    for completion in out:  # each ends at its first EOS (kept, as TRL keeps it) or runs the full length
        assert eos not in completion[:-1] and (len(completion) == 12 or completion[-1] == eos)


def test_settings_the_sampler_lacks_keep_trls_path(trainer):
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.fallback_reason(model) is None
    trainer.generation_config.top_k = 5
    assert trainer.fallback_reason(model) == "top_k = 5"
    trainer.generation_config.top_k = 0
    trainer.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in trainer.fallback_reason(model)
    trainer.generation_config.repetition_penalty = 1.0
    assert trainer.fallback_reason(model, images=[object()]) == "multimodal prompts"
    trainer.use_vllm = True
    assert "vLLM" in trainer.fallback_reason(model)


def test_a_grpo_step_trains_through_the_fast_rollouts(trainer):
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1 and trainer.last_rollout_path == "fast"
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_use_vllm_needs_a_cuda_device(tmp_path):
    with pytest.raises(ValueError, match="use_vllm is set but the device is 'cpu'"):
        GRPOStageConfig(use_vllm=True).trl_config(tmp_path, [], "test")
    assert GRPOStageConfig().trl_config(tmp_path, [], "test").use_vllm is False
