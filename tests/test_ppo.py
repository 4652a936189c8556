"""PPO: the tensor functions on hand-computed numbers, one tiny end-to-end run on CPU, and its
checkpoints: a resumed run ends exactly as an uninterrupted one; incomplete ones never count."""

import copy
import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from srl_assets.kl_controller import make_kl_controller
from srl_assets.rlvr import ppo_trainer
from srl_assets.rlvr.ppo_trainer import (
    CHECKPOINT_MARKER,
    PPOConfig,
    PPOTrainer,
    ValueHead,
    compute_gae,
    entropy_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)

# Two completions: row 0 has 3 tokens, row 1 has 2; the rest is padding (values 9.0 there must
# never leak into the result).
REWARDS = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
VALUES = torch.tensor([[0.5, 0.5, 0.5, 9.0], [1.0, 1.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_gae_hand_computed():
    # gamma = 0.9, lam = 0.5, so gamma * lam = 0.45.
    # Row 0: t=2 is terminal (t=3 is padding):  delta2 = 1 - 0.5              = 0.5,   A2 = 0.5
    #        t=1: delta1 = 0 + 0.9 * 0.5 - 0.5 = -0.05;  A1 = -0.05 + 0.45 * 0.5   = 0.175
    #        t=0: delta0 = -0.05;                        A0 = -0.05 + 0.45 * 0.175 = 0.02875
    # Row 1: t=1 terminal: delta1 = 2 - 1 = 1, A1 = 1
    #        t=0: delta0 = 0 + 0.9 * 1 - 1 = -0.1;       A0 = -0.1 + 0.45 * 1      = 0.35
    # Returns = A + V on real tokens, 0 on padding.
    advantages, returns = compute_gae(REWARDS, VALUES, MASK, gamma=0.9, lam=0.5)
    expected_adv = torch.tensor([[0.02875, 0.175, 0.5, 0.0], [0.35, 1.0, 0.0, 0.0]])
    expected_ret = torch.tensor([[0.52875, 0.675, 1.0, 0.0], [1.35, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(advantages, expected_adv)
    torch.testing.assert_close(returns, expected_ret)


def test_gae_gamma_one_lam_one_is_reward_to_go_minus_value():
    # With gamma = lam = 1, A_t = sum of rewards from t on - V_t (the values telescope away).
    advantages, _ = compute_gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    expected = torch.tensor([[1 - 0.5, 1 - 0.5, 1 - 0.5, 0.0], [2 - 1.0, 2 - 1.0, 0.0, 0.0]])
    torch.testing.assert_close(advantages, expected)


def test_masked_mean_and_whiten_ignore_padding():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert masked_mean(values, mask).item() == 2.0
    # mean 2, population std 1 -> [-1, 1]; the padded 100 comes back as 0.
    torch.testing.assert_close(masked_whiten(values, mask), torch.tensor([[-1.0, 1.0, 0.0]]))


# (case, logprob, old_logprob, advantage, expected per-token loss, clipped?) with clip_eps = 0.2
POLICY_CASES = [
    ("ratio 1: no clipping", 0.0, 0.0, 2.0, -2.0, False),
    # ratio e^0.5 = 1.6487 > 1.2 with A > 0: the gain is capped at 1.2 * A
    ("ratio above 1+eps, A>0: clipped", 0.5, 0.0, 1.0, -1.2, True),
    # ratio e^-0.5 = 0.6065 < 0.8 with A > 0: the unclipped (worse) term counts
    ("ratio below 1-eps, A>0: not clipped", -0.5, 0.0, 1.0, -math.exp(-0.5), False),
    # ratio 0.6065 with A < 0: the penalty is capped at -0.8 * A = 0.8
    ("ratio below 1-eps, A<0: clipped", -0.5, 0.0, -1.0, 0.8, True),
    # ratio 1.6487 with A < 0: the larger loss 1.6487 counts
    ("ratio above 1+eps, A<0: not clipped", 0.5, 0.0, -1.0, math.exp(0.5), False),
]


@pytest.mark.parametrize("case,logp,old,adv,expected,clipped", POLICY_CASES)
def test_policy_loss_single_token(case, logp, old, adv, expected, clipped):
    t = lambda x: torch.tensor([[x]])  # noqa: E731
    loss, clipfrac = policy_loss(t(logp), t(old), t(adv), t(1.0), clip_eps=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-6), case
    assert clipfrac.item() == (1.0 if clipped else 0.0), case


def test_policy_loss_averages_over_unmasked_tokens_only():
    # Tokens: case 1 (-1.2, clipped), case 3 (0.8, clipped), and a padded token with a huge ratio.
    logp = torch.tensor([[0.5, -0.5, 5.0]])
    adv = torch.tensor([[1.0, -1.0, 7.0]])
    loss, clipfrac = policy_loss(logp, torch.zeros(1, 3), adv, torch.tensor([[1, 1, 0]]), 0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert clipfrac.item() == 1.0


def test_value_loss_clipping():
    # Token 0: v=2, old=0, R=2: clipped v = 0.2; errors 0 and 3.24 -> 3.24 (clipped counts).
    # Token 1: v=0.1, old=0, R=1: within the clip; both errors 0.81 -> 0.81.
    # Token 2: padding, ignored. Loss = 0.5 * (3.24 + 0.81) / 2 = 1.0125.
    values = torch.tensor([[2.0, 0.1, 50.0]])
    old = torch.zeros(1, 3)
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    loss = value_loss(values, old, returns, torch.tensor([[1, 1, 0]]), clip_value=0.2)
    assert loss.item() == pytest.approx(1.0125)


def test_entropy_from_logits():
    # Uniform over 4 tokens: ln 4; a one-hot-like distribution: ~0. The padded row is ignored.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert entropy_from_logits(logits, mask).item() == pytest.approx(math.log(4) / 2, abs=1e-6)


def test_value_head_shape():
    assert ValueHead(8)(torch.zeros(2, 5, 8)).shape == (2, 5)


@pytest.mark.parametrize(
    "kwargs,field_name",
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"gamma": 1.5}, "gamma"),
        ({"kl_controller": "bogus"}, "kl_controller"),
        ({"kl_controller": "adaptive", "kl_coef": 0.0}, "kl_coef"),
        ({"vf_coef": -1.0}, "vf_coef"),
        ({"save_steps": 0}, "save_steps"),
    ],
)
def test_config_validation_names_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=field_name):
        PPOConfig(**kwargs)


# ----------------------------------------------------------------------------------------------
# End to end: a tiny Llama, a character-level tokenizer, reward = fraction of 'a' characters.


def char_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list("abcdefgh ."))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()  # join characters without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )


def fraction_of_a(prompts: list[str], completions: list[str]) -> list[float]:
    return [c.count("a") / len(c) if c else 0.0 for c in completions]


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama; the same `seed` gives the same initial weights."""
    torch.manual_seed(seed)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(model_config)


def test_ppo_end_to_end_tiny_llama():
    tokenizer = char_tokenizer()
    model = tiny_llama(tokenizer)
    ref_model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]

    config = PPOConfig(
        learning_rate=1e-3,
        num_steps=3,
        batch_size=4,
        ppo_epochs=2,
        max_new_tokens=8,
        kl_coef=0.1,
        kl_controller="adaptive",
        kl_target=6.0,
        kl_horizon=100.0,
        ent_coef=0.01,
    )
    kl = make_kl_controller("adaptive", init_coef=0.1, target=6.0, horizon=100.0)
    trainer = PPOTrainer(model, ref_model, tokenizer, fraction_of_a, config, kl)
    prompts = ["abc", "hello", "bad", "a cab.", "fade"]
    seen = []
    metrics = trainer.train(prompts, on_step=seen.append)

    assert len(metrics) == 3 and seen == metrics
    keys = {"reward_mean", "kl", "kl_coef", "policy_loss", "value_loss", "entropy", "clipfrac"}
    for row in metrics:
        assert keys <= row.keys()
        assert all(math.isfinite(row[k]) for k in keys), row
    # Step 0 samples from the policy equal to the reference: KL is exactly 0.
    assert metrics[0]["kl"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, ref_model.parameters()))
    # KL 0 is below target: error clipped to -0.2, coef *= 1 - 0.2 * 4 / 100 after step 0.
    assert metrics[1]["kl_coef"] == pytest.approx(0.1 * (1 - 0.2 * 4 / 100))
    assert kl.value != 0.1


# ----------------------------------------------------------------------------------------------
# Checkpoints and resume

PROMPTS = ["abc", "hello", "bad", "a cab.", "fade"]
RESUME_CONFIG = dict(learning_rate=1e-3, num_steps=5, batch_size=4, ppo_epochs=2, max_new_tokens=8,
                     kl_coef=0.1, kl_controller="adaptive", kl_target=6.0, kl_horizon=100.0,
                     ent_coef=0.01, save_steps=2)


class Interrupted(Exception):
    pass


def fresh_trainer(**overrides) -> PPOTrainer:
    """A trainer on the same initial weights every time, as a retried op would build it."""
    tokenizer = char_tokenizer()
    model = tiny_llama(tokenizer)
    config = PPOConfig(**{**RESUME_CONFIG, **overrides})
    return PPOTrainer(model, copy.deepcopy(model), tokenizer, fraction_of_a, config)


def interrupt_at(step: int):
    """An `on_step` that raises once the metrics of `step` (0-based) are reported."""

    def on_step(metrics):
        if metrics["step"] == step:
            raise Interrupted

    return on_step


def run_until_interrupted(folder, step: int, **overrides) -> None:
    with pytest.raises(Interrupted):
        fresh_trainer(**overrides).train(PROMPTS, on_step=interrupt_at(step), checkpoint_dir=folder)


def test_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    # Reference: 5 steps in one go. Checkpoints after steps 2, 4 and the last one (5).
    uninterrupted = fresh_trainer()
    expected = uninterrupted.train(PROMPTS, checkpoint_dir=tmp_path / "once")
    assert uninterrupted.resumed_from is None
    assert sorted(os.listdir(tmp_path / "once")) == ["checkpoint-4", "checkpoint-5"]  # the last 2

    # Killed during step index 2: checkpoint-2 is complete, nothing of step 3 was saved.
    run_until_interrupted(tmp_path / "twice", step=2)
    assert sorted(os.listdir(tmp_path / "twice")) == ["checkpoint-2"]
    resumed = fresh_trainer()
    reported = []
    metrics = resumed.train(PROMPTS, on_step=reported.append, checkpoint_dir=tmp_path / "twice")

    assert resumed.resumed_from == tmp_path / "twice" / "checkpoint-2"
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    assert [m["step"] for m in reported] == [2, 3, 4]  # restored rows are not reported twice
    # Same weights, optimizer, KL coefficient and random streams: the same numbers, exactly.
    assert metrics == expected
    assert resumed.kl_controller.value == uninterrupted.kl_controller.value
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(uninterrupted.value_head.linear.weight, resumed.value_head.linear.weight)


def test_restored_state_equals_the_saved_one(tmp_path):
    run_until_interrupted(tmp_path, step=2)
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / CHECKPOINT_MARKER).is_file()
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    saved_optimizer = torch.load(checkpoint / "optimizer.pt")

    # num_steps = the checkpoint's step: resume, restore, and run nothing more.
    restored = fresh_trainer(num_steps=2)
    metrics = restored.train(PROMPTS, checkpoint_dir=tmp_path)

    assert restored.resumed_from == checkpoint and metrics == saved["metrics"] and len(metrics) == 2
    # The adaptive coefficient moved after each step: the restored one is the saved, not kl_coef.
    assert saved["kl_controller"]["value"] != RESUME_CONFIG["kl_coef"]
    assert restored.kl_controller.value == saved["kl_controller"]["value"]
    # AdamW's per-parameter step counts and moments (2 steps x 2 epochs = 4 updates).
    state = restored.optimizer.state_dict()["state"]
    assert len(state) == len(saved_optimizer["state"]) > 0
    for index, param_state in saved_optimizer["state"].items():
        assert float(param_state["step"]) == 4.0
        for key, value in param_state.items():
            assert torch.equal(state[index][key], value), (index, key)
    head = torch.load(checkpoint / "value_head.pt")
    assert torch.equal(restored.value_head.linear.weight, head["linear.weight"])


def test_half_written_checkpoint_is_ignored(tmp_path):
    run_until_interrupted(tmp_path, step=2)
    # A later checkpoint without its completion marker: a save cut short, or a folder copied in.
    complete = tmp_path / "checkpoint-2"
    partial = tmp_path / "checkpoint-4"
    partial.mkdir()
    for name in ["config.json", "model.safetensors", "trainer_state.json"]:
        (partial / name).write_bytes((complete / name).read_bytes())
    assert ppo_trainer.latest_checkpoint(tmp_path) == complete

    trainer = fresh_trainer()
    metrics = trainer.train(PROMPTS, checkpoint_dir=tmp_path)
    assert trainer.resumed_from == complete and len(metrics) == 5
    # The half-written folder was replaced when step 4 was really saved, then rotated away.
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4", "checkpoint-5"]
    assert all((tmp_path / name / CHECKPOINT_MARKER).is_file() for name in os.listdir(tmp_path))


def test_save_cut_short_leaves_no_checkpoint_that_looks_complete(tmp_path, monkeypatch):
    run_until_interrupted(tmp_path, step=2)
    real_save = torch.save

    def dies_on_the_optimizer(obj, path, *args, **kwargs):
        if str(path).endswith("optimizer.pt"):
            raise Interrupted  # as if the process were killed halfway through the save
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ppo_trainer.torch, "save", dies_on_the_optimizer)
    with pytest.raises(Interrupted):
        fresh_trainer().train(PROMPTS, checkpoint_dir=tmp_path)  # resumes, dies saving step 4
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [".checkpoint-4.tmp", "checkpoint-2"]
    assert ppo_trainer.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"

    trainer = fresh_trainer()
    assert len(trainer.train(PROMPTS, checkpoint_dir=tmp_path)) == 5
    assert trainer.resumed_from == tmp_path / "checkpoint-2"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4", "checkpoint-5"]  # no temp folder left


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    run_until_interrupted(tmp_path, step=2)
    with pytest.raises(ValueError, match=r"\['batch_size'\]"):
        fresh_trainer(batch_size=2).train(PROMPTS, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="num_steps"):
        fresh_trainer(num_steps=1).train(PROMPTS, checkpoint_dir=tmp_path)
