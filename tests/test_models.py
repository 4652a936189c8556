"""The tiny default policy: tokenizer, model, save/load through the Auto classes, generation, warm-start SFT."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.models.sft import warm_start_sft
from srl_assets.models.tiny import (
    THINK_CLOSE,
    THINK_OPEN,
    TinyModelConfig,
    build_tiny_model,
    count_parameters,
    generate,
    load_model,
    pick_device,
    save_model,
    train_bpe_tokenizer,
)
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory

# Small enough for a 2-core CPU test run; the default config is only built, never trained, here.
TEST_CONFIG = TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512)


@pytest.fixture(scope="module")
def plant_examples() -> list[dict[str, str]]:
    rules = RulesIntegration().load("plant")
    domain = get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(16, "train", 1)
    examples = []
    for task in tasks:
        plan = domain.plan(task.params, rules)
        examples.append({"prompt": task.prompt + "\n", "completion": render_trajectory(plan.steps, plan.spec)})
    return examples


@pytest.fixture(scope="module")
def tokenizer(plant_examples):
    corpus = [ex["prompt"] for ex in plant_examples] + [ex["completion"] for ex in plant_examples]
    return train_bpe_tokenizer(corpus, vocab_size=1024)


def test_tokenizer_round_trips_real_trajectories_exactly(tokenizer, plant_examples):
    for ex in plant_examples:
        for text in (ex["prompt"], ex["completion"], ex["prompt"] + ex["completion"]):
            ids = tokenizer(text)["input_ids"]
            assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("text", [
    f"{THINK_OPEN}check the biome{THINK_CLOSE}1. **Climate** use 0 to 30 C.",  # tags glued to text
    f"{THINK_OPEN}\n  two  spaces\n{THINK_CLOSE} 2. **Final spec** {{\"a\": [1, -2.5]}}",  # whitespace, JSON
    "no tags: caf\u00e9 \u2192 \U0001F331 \t tab",  # bytes outside the corpus still round-trip
])
def test_think_tags_survive_decoding_and_are_single_tokens(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    for tag in (THINK_OPEN, THINK_CLOSE):
        assert len(tokenizer(tag)["input_ids"]) == 1


def test_special_tokens_are_dropped_and_padding_is_left(tokenizer):
    ids = tokenizer("abc")["input_ids"] + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "abc"
    batch = tokenizer(["a", "a longer prompt"], padding=True)
    assert tokenizer.padding_side == "left"
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id and batch["attention_mask"][0][0] == 0


def test_chat_template_renders_roles_and_generation_prompt(tokenizer):
    messages = [{"role": "system", "content": "You design plants."}, {"role": "user", "content": "A fern."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|bos|><|system|>\nYou design plants.<|eos|>\n<|user|>\nA fern.<|eos|>\n<|assistant|>\n")
    full = messages + [{"role": "assistant", "content": "1. **Climate** ok"}]
    out = tokenizer.apply_chat_template(full, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "1. **Climate** ok<|eos|>"


def test_default_model_is_a_small_llama(tokenizer):
    model = build_tiny_model(tokenizer, TinyModelConfig(vocab_size=1024))
    assert model.config.model_type == "llama"
    assert count_parameters(model) < 5_000_000


def test_vocab_smaller_than_tokenizer_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_model(tokenizer, TinyModelConfig(vocab_size=len(tokenizer) - 1))


def test_pick_device_matches_hardware():
    device, dtype = pick_device()
    if torch.cuda.is_available():
        assert device == "cuda" and dtype in (torch.bfloat16, torch.float32)
    else:
        assert (device, dtype) == ("cpu", torch.float32)


def test_sft_lowers_loss_then_save_load_generate(tokenizer, plant_examples, tmp_path):
    model = build_tiny_model(tokenizer, TEST_CONFIG, seed=0)
    metrics = warm_start_sft(model, tokenizer, plant_examples, tmp_path / "sft", max_steps=30, lr=3e-3,
                             batch_size=8, seed=0)
    assert metrics["steps"] == 30
    assert metrics["final_loss"] < metrics["initial_loss"] - 1.0  # from ~ln(vocab) well on the way down
    assert not list((tmp_path / "sft").glob("checkpoint-*"))  # no intermediate checkpoints unless asked

    save_model(model, tokenizer, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    loaded, loaded_tok = load_model(tmp_path / "ckpt", device="cpu", dtype=torch.float32)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert loaded_tok.padding_side == "left" and loaded_tok.pad_token == "<|pad|>"

    prompts = [ex["prompt"] for ex in plant_examples[:3]]
    greedy = generate(loaded, loaded_tok, prompts, max_new_tokens=12, batch_size=2)
    assert len(greedy) == 3 and all(isinstance(text, str) for text in greedy)
    # batching and left padding must not change a greedy completion
    assert greedy == [generate(loaded, loaded_tok, [p], max_new_tokens=12)[0] for p in prompts]
    sampled = generate(loaded, loaded_tok, prompts, max_new_tokens=12, temperature=1.0, seed=0)
    assert sampled == generate(loaded, loaded_tok, prompts, max_new_tokens=12, temperature=1.0, seed=0)


class _Logs(TrainerCallback):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.rows.append(dict(logs))


def test_sft_on_cpu_takes_trls_loss_and_metrics_from_the_full_logits(tokenizer, plant_examples, tmp_path,
                                                                     monkeypatch):
    """FullLogitsSFTTrainer's two CPU paths (the LM head on the completion tokens only, the default for a Llama; the
    full logits, for other architectures) against TRL's own chunked LM head, from the same model, data and seed: the
    same loss curve, logged metrics and trained weights (to float rounding)."""
    import srl_assets.models.sft as sft

    runs = {}
    for path, vocab_limit, plain_heads in (("head", sft.FULL_LOGITS_MAX_VOCAB, sft.PLAIN_HEAD_MODEL_TYPES),
                                           ("full", sft.FULL_LOGITS_MAX_VOCAB, frozenset()),
                                           ("trl", 0, sft.PLAIN_HEAD_MODEL_TYPES)):
        monkeypatch.setattr(sft, "FULL_LOGITS_MAX_VOCAB", vocab_limit)
        monkeypatch.setattr(sft, "PLAIN_HEAD_MODEL_TYPES", plain_heads)
        model, logs = build_tiny_model(tokenizer, TEST_CONFIG, seed=0), _Logs()
        metrics = warm_start_sft(model, tokenizer, plant_examples, tmp_path / path, max_steps=4, lr=3e-3,
                                 batch_size=4, seed=0, callbacks=[logs])
        runs[path] = (metrics, logs.rows, model)
    assert [runs[p][0]["loss_from"] for p in ("head", "full", "trl")] == [
        "LM head on completion tokens", "full logits", "TRL's chunked LM head"]
    _, trl_logs, trl_model = runs["trl"]
    for path in ("head", "full"):
        _, logs, trained = runs[path]
        assert len(logs) == len(trl_logs) == 4
        for ours, theirs in zip(logs, trl_logs, strict=True):
            assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-4), path
            assert ours["entropy"] == pytest.approx(theirs["entropy"], abs=1e-4), path
            assert ours["mean_token_accuracy"] == pytest.approx(theirs["mean_token_accuracy"], abs=1e-3), path
            assert ours["num_tokens"] == theirs["num_tokens"], path
        for (name, ours), theirs in zip(trained.state_dict().items(), trl_model.state_dict().values(), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-5), (path, name)


def test_sft_rejects_malformed_examples(tokenizer, tmp_path):
    model = build_tiny_model(tokenizer, TEST_CONFIG)
    with pytest.raises(ValueError, match="completion"):
        warm_start_sft(model, tokenizer, [{"prompt": "x"}], tmp_path, max_steps=1)


def test_evaluation_is_greedy_by_default_and_seeded_when_sampled(tokenizer, tmp_path, monkeypatch):
    from srl_assets.collaboration.verifier import Verifier
    from srl_assets.performance import evaluation

    rules, domain = RulesIntegration().load("plant"), get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(3, "eval", 7)
    prompts = [task.prompt + "\n" for task in tasks]
    save_model(build_tiny_model(tokenizer, TEST_CONFIG, seed=0), tokenizer, tmp_path / "ckpt")
    decoded: list[list[str]] = []
    real_generate = evaluation.generate
    monkeypatch.setattr(evaluation, "generate", lambda *a, **kw: decoded.append(real_generate(*a, **kw)) or decoded[-1])

    def run(**kw):
        records = evaluation.evaluate_checkpoint("c", str(tmp_path / "ckpt"), tasks, prompts,
                                                 Verifier(domain, rules), max_new_tokens=16, **kw)
        assert [r.task_id for r in records] == [t.task_id for t in tasks]
        return decoded[-1]

    greedy = run()
    model, tok = load_model(tmp_path / "ckpt")
    assert greedy == generate(model, tok, prompts, max_new_tokens=16)  # temperature 0 = greedy
    sampled = run(temperature=1.0, seed=0)
    assert sampled == run(temperature=1.0, seed=0)  # the same seed gives the same samples
    assert sampled != greedy and sampled != run(temperature=1.0, seed=1)
