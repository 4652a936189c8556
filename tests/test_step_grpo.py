"""SRL's step-wise GRPO (srl_assets/srl/step_grpo.py) on a tiny model built offline: steps end at a line
break with either sampler, one update moves the policy toward the better step, groups with no reward
spread change nothing, an interrupted run resumes with the same prompts, bad input is refused by name."""

import pytest
import torch

from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, load_model, save_model, train_bpe_tokenizer
from srl_assets.prompts import step_prompt, task_prompt
from srl_assets.srl.step_grpo import (STATE_FILE, StepGRPOTrainer, ends_right, expert_completion, group_advantages,
                                      line_break_ids, merge_duplicates, rollout_steps, step_text, token_logprobs)
from srl_assets.training.configs import StepSRLConfig

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 256}
STEPS = ["1. **Site** oak by the river", "2. **Soil** loam, pH 6.5", "3. **Water** 12 litres a week"]
LORE = "oaks like water\nloam holds it"
ROWS = [{"prompt": step_prompt(task, LORE, STEPS[:k], None), "target": STEPS[k]}
        for task in ("plant an oak", "plant a young oak") for k in range(3)]
SMALL = {"max_steps": 4, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 12,
         "save_steps": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0}


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    corpus = [r["prompt"] + r["target"] + "\n" for r in ROWS] * 3 + [LORE, "\n".join(STEPS)]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=300)
    model = build_tiny_model(tokenizer, TinyModelConfig(vocab_size=len(tokenizer), **TINY), seed=0)
    return str(save_model(model, tokenizer, tmp_path_factory.mktemp("tiny") / "model"))


def test_line_break_ids_are_every_token_holding_a_line_break_and_eos(tiny_path):
    _, tokenizer = load_model(tiny_path)
    ids = line_break_ids(tokenizer)
    expected = {i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])} | {tokenizer.eos_token_id}
    assert set(ids) == expected and ids == sorted(ids)
    assert tokenizer.eos_token_id in ids
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert newline and set(newline) <= set(ids)
    assert all(i == tokenizer.eos_token_id or "\n" in tokenizer.decode([i]) for i in ids)


class _Vocab:
    """A tokenizer's vocabulary, as line_break_ids reads it."""

    def __init__(self, texts, eos):
        self.texts, self.eos_token_id = texts, eos

    def __len__(self):
        return len(self.texts)

    def decode(self, ids):
        return "".join(self.texts[i] for i in ids)


def test_line_break_ids_include_merged_line_breaks_and_refuse_a_vocabulary_without_one():
    vocab = _Vocab(["a", "\n", ".\n", "\n\n", "b", "<eos>", " \n  "], eos=5)
    assert line_break_ids(vocab) == [1, 2, 3, 5, 6]
    assert line_break_ids(_Vocab(["a", "\n"], eos=None)) == [1]
    with pytest.raises(ValueError, match="no token holding a line break"):
        line_break_ids(_Vocab(["a", "b"], eos=None))


@pytest.mark.parametrize("sampler", ["fast", "hf"])
def test_rollouts_end_each_row_at_its_first_stop_token(tiny_path, monkeypatch, sampler):
    monkeypatch.setenv("SRL_SAMPLER", sampler)
    model, tokenizer = load_model(tiny_path)
    model.train()
    # A third of the vocabulary stops a row, so rows of a random model stop at different places.
    stops = sorted(set(range(0, len(tokenizer), 3)) | set(line_break_ids(tokenizer)))
    prompts = [r["prompt"] for r in ROWS] * 2  # different lengths: left-padded batches
    out = rollout_steps(model, tokenizer, prompts, max_new_tokens=10, temperature=1.0, top_p=1.0, seed=3,
                        batch_size=5, stop_ids=stops)
    assert len(out) == len(prompts)
    for row in out:
        assert 1 <= len(row) <= 10
        assert all(t not in stops for t in row[:-1]), row  # nothing after the first stop
        assert row[-1] in stops or len(row) == 10
    assert any(len(r) < 10 for r in out) and len({len(r) for r in out}) > 1
    again = rollout_steps(model, tokenizer, prompts, 10, 1.0, 1.0, 3, 5, stops)
    assert again == out  # seeded: a resumed run draws the same samples
    assert model.training  # rollouts sample in eval mode, then hand the policy back in train mode


def test_step_text_is_the_partial_prompt_line_and_the_completion_up_to_its_line_break():
    assert step_text("Task: t\nPlan:\n1. **A** a\n", "2. **B** b\n3. **C** c") == "2. **B** b"
    assert step_text("Task: t\nPlan:\n2. **B**", " b\nmore") == "2. **B** b"  # a shown title is part of it
    assert step_text("Task: t\nPlan:\n", "1. **A** a") == "1. **A** a"  # cut at max length: no line break
    assert step_text("Task: t\nPlan:\n", "\n1. **A** a") == ""  # an empty line is an empty step
    assert step_text("Task: t\nPlan:\n", "  1. **A** a  \n") == "1. **A** a"
    assert step_text(task_prompt("t", ""), "") == ""


def _logp_sum(model, prompt_ids, completion_ids, pad_id):
    with torch.no_grad():
        logp, mask = token_logprobs(model, prompt_ids, completion_ids, pad_id, 1.0)
    return (logp * mask).sum(-1).tolist()


def test_one_update_moves_the_policy_toward_the_higher_reward_step(tiny_path):
    from srl_assets.reward_normalizer import make_normalizer
    from srl_assets.srl.step_reward import score_step

    model, tokenizer = load_model(tiny_path)
    model.train()
    row = ROWS[1]
    right, wrong = row["target"], "2. **Soil** sand, pH 9"
    rewards = [score_step(right, row["target"], "difflib"), score_step(wrong, row["target"], "difflib")]
    assert rewards[0] == 1.0 and rewards[1] < 1.0
    advantages = make_normalizer("group").normalize(rewards, 2)
    assert advantages[0] > 0 > advantages[1]
    prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
    completions = [tokenizer(t + "\n", add_special_tokens=False)["input_ids"] for t in (right, wrong)]
    pad = tokenizer.pad_token_id
    before = _logp_sum(model, [prompt, prompt], completions, pad)
    trainer = StepGRPOTrainer(StepSRLConfig(**{**SMALL, "learning_rate": 1e-3}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loss, kl = trainer._update(model, None, optimizer, [prompt, prompt], completions, advantages, pad, 0.0)
    after = _logp_sum(model, [prompt, prompt], completions, pad)
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    assert kl == 0.0 and loss != 0.0


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_merged_duplicates_give_the_update_of_their_copies(tiny_path, beta):
    """Identical members trained once with their count as weight: the same loss, KL and gradient as each copy
    (what merge_duplicates saves: a group's expert copies and exact rollouts)."""
    row = ROWS[1]
    _, tokenizer = load_model(tiny_path)
    prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
    right, wrong = (tokenizer(t + "\n", add_special_tokens=False)["input_ids"]
                    for t in (row["target"], "2. **Soil** sand, pH 9"))
    pad = tokenizer.pad_token_id
    rows, weights = merge_duplicates([(row["prompt"], tuple(c), a)
                                      for c, a in ((right, 0.5), (right, 0.5), (wrong, -1.0), (right, 0.5))])
    assert (rows, weights) == ([0, 2], [3.0, 1.0])
    results = []
    for members in (([right, right, wrong, right], [0.5, 0.5, -1.0, 0.5], None),
                    ([right, wrong], [0.5, -1.0], weights)):
        model, _ = load_model(tiny_path)
        reference = load_model(tiny_path)[0] if beta else None
        if reference is not None:  # a reference apart from the policy, so the KL term has a gradient
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in reference.parameters():
                    p.add_(0.01 * torch.randn(p.shape, generator=g))
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        completions, advantages, w = members
        loss, kl = StepGRPOTrainer(StepSRLConfig(**SMALL))._update(
            model, reference, optimizer, [prompt] * len(completions), completions, advantages, pad, beta, w)
        results.append((loss, kl, {k: v.clone() for k, v in model.state_dict().items()}))
    (loss_a, kl_a, after_a), (loss_b, kl_b, after_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and kl_a == pytest.approx(kl_b, rel=1e-5, abs=1e-12)
    assert (kl_a > 0) == (beta > 0)
    assert all(torch.allclose(after_a[k], after_b[k], atol=1e-6) for k in after_a)
    before = load_model(tiny_path)[0].state_dict()
    assert any(not torch.equal(before[k], after_a[k]) for k in before)  # the step did move the weights


def _weights(path):
    return {k: v.clone() for k, v in load_model(path)[0].state_dict().items()}


def test_groups_whose_rewards_all_agree_change_nothing(tiny_path, tmp_path, monkeypatch):
    import srl_assets.srl.step_reward as step_reward

    monkeypatch.setattr(step_reward, "score_step", lambda step, expert, reward: 0.5)
    summary = StepGRPOTrainer(StepSRLConfig(**{**SMALL, "max_steps": 2, "save_steps": 0})).train(
        tiny_path, ROWS, tmp_path / "work", tmp_path / "out")
    assert summary["steps"] == 2 and all(r["informative_groups"] == 0 and r["loss"] == 0.0 for r in summary["log"])
    before, after = _weights(tiny_path), _weights(tmp_path / "out")
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("normalizer", ["group", "running"])
def test_an_interrupted_run_resumes_to_max_steps_with_the_same_prompts(tiny_path, tmp_path, normalizer):
    config = StepSRLConfig(**{**SMALL, "normalizer": normalizer})
    trainer = StepGRPOTrainer(config)
    # The step's prompts depend on the step alone: each pass over the rows is a seeded permutation.
    first = [trainer._prompts_for(s, ROWS) for s in range(6)]
    assert first == [StepGRPOTrainer(StepSRLConfig(**SMALL))._prompts_for(s, ROWS) for s in range(6)]
    one_pass = [r["prompt"] for batch in first[:3] for r in batch]
    assert sorted(one_pass) == sorted(r["prompt"] for r in ROWS)

    straight = trainer.train(tiny_path, ROWS, tmp_path / "straight", tmp_path / "straight_out")

    def die_at_step_3(row):
        if row.get("step") == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        trainer.train(tiny_path, ROWS, tmp_path / "work", tmp_path / "out", die_at_step_3)
    checkpoints = tmp_path / "work" / "trainer"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2"]
    assert (checkpoints / "checkpoint-2" / STATE_FILE).is_file()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    resumed = trainer.train(tiny_path, ROWS, tmp_path / "work", tmp_path / "out")
    assert resumed["resumed_from"] == str(checkpoints / "checkpoint-2") and resumed["steps"] == 4
    assert [r["step"] for r in resumed["log"]] == [1, 2, 3, 4]
    # Same prompts, same samples, same restored weights and optimizer: the uninterrupted run's curve.
    assert [r["raw_reward_mean"] for r in resumed["log"]] == [r["raw_reward_mean"] for r in straight["log"]]
    assert [r["tokens"] for r in resumed["log"]] == [r["tokens"] for r in straight["log"]]
    assert resumed["generated_tokens"] == straight["generated_tokens"]
    # A `running` normalizer resumes with the moments of every reward before the interruption.
    assert resumed["normalizer_stats"] == straight["normalizer_stats"]
    before, after = _weights(tmp_path / "straight_out"), _weights(tmp_path / "out")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rows_without_a_target_step_are_refused_by_index(tiny_path, tmp_path):
    rows = [ROWS[0], {**ROWS[1], "target": "  "}, {"prompt": "", "target": "x"}]
    with pytest.raises(ValueError, match=r"SRL rows \[1, 2\] lack a prompt or a target step"):
        StepGRPOTrainer(StepSRLConfig(**SMALL)).train(tiny_path, rows, tmp_path / "w", tmp_path / "o")
    with pytest.raises(ValueError, match="at least one step instance"):
        StepGRPOTrainer(StepSRLConfig(**SMALL)).train(tiny_path, [], tmp_path / "w", tmp_path / "o")


@pytest.mark.parametrize(("values", "named"), [
    ({"num_generations": 1}, r"num_generations must be >= 2 .*got 1"),
    ({"max_steps": 0}, r"StepSRLConfig.max_steps must be an integer >= 1, got 0"),
    ({"prompts_per_step": 2.5}, r"StepSRLConfig.prompts_per_step must be an integer >= 1, got 2.5"),
    ({"max_completion_length": -3}, r"max_completion_length must be an integer >= 1, got -3"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\), got 1.0"),
    ({"normalizer": "zscore"}, r"normalizer 'zscore' unknown"),
    ({"kl_controller": "adaptive", "beta": 0.0}, r"kl_controller 'adaptive' needs beta > 0"),
    ({"save_steps": -1}, r"save_steps must be >= 0"),
    ({"learning_rate": 0.0}, r"learning_rate and temperature must be > 0"),
    ({"expert_samples": 8}, r"expert_samples must be an integer in \[0, num_generations - 1\].*got 8"),
    ({"expert_samples": -1}, r"expert_samples must be an integer in \[0, num_generations - 1\].*got -1"),
    ({"update": "ppo"}, r"StepSRLConfig.update 'ppo' unknown; known: \['grpo', 'rft'\]"),
    ({"update": "rft", "keep_reward": 0.0}, r"keep_reward must be in \(0, 1\].*got 0.0"),
    ({"update": "rft", "keep_reward": 1.5}, r"keep_reward must be in \(0, 1\].*got 1.5"),
])
def test_config_errors_name_the_field(values, named):
    with pytest.raises(ValueError, match=named):
        StepSRLConfig(**values)


def test_unknown_config_fields_are_named():
    with pytest.raises(ValueError, match=r"unknown SRL config fields \['max_completion_lenght'\]"):
        StepSRLConfig.from_dict({"max_completion_lenght": 80})
    assert StepSRLConfig.from_dict({"max_steps": 3}).max_steps == 3


@pytest.mark.parametrize(("ids", "last", "right"), [
    ([7, 1], True, True),     # the final step, then EOS: the trajectory ends where the expert's does
    ([7, 2], True, False),    # the final step, then a line break: the policy would write a step too many
    ([7, 1], False, False),   # EOS after a middle step: the trajectory would end early
    ([7, 2], False, True),    # a middle step, then its line break
    ([7, 7], True, True),     # cut at the length limit: scored as it is
    ([], False, True),
])
def test_a_step_must_end_as_the_experts_does(ids, last, right):
    assert ends_right(ids, last, eos_id=1, stop_ids={1, 2}) is right


def test_negative_weight_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"negative_weight must be in \[0, 1\], got 1.5"):
        StepSRLConfig(negative_weight=1.5)


def test_group_advantages_centre_each_group_and_scale_the_negative_side():
    assert group_advantages([1.0, -1.0, 3.0, 1.0], 2) == [1.0, -1.0, 1.0, -1.0]
    assert group_advantages([1.0, -1.0, 3.0, 1.0], 2, negative_weight=0.0) == [1.0, 0.0, 1.0, 0.0]
    assert group_advantages([5.0, 5.0], 2) == [0.0, 0.0]  # a uniform group carries no signal


@pytest.mark.parametrize("title", [None, "Soil"])
def test_the_expert_step_is_written_as_the_rollout_that_would_produce_it(tiny_path, title):
    _, tokenizer = load_model(tiny_path)
    stops = set(line_break_ids(tokenizer))
    prompt = step_prompt("plant an oak", LORE, STEPS[:1], title)
    ids = expert_completion(tokenizer, prompt, STEPS[1], last=False)
    text = tokenizer.decode(ids)
    assert text.endswith("\n") and step_text(prompt, text) == STEPS[1]
    assert ends_right(ids, False, tokenizer.eos_token_id, stops) and not any(t in stops for t in ids[:-1])
    last = expert_completion(tokenizer, step_prompt("plant an oak", LORE, STEPS[:2], None), STEPS[2], last=True)
    assert last[-1] == tokenizer.eos_token_id and ends_right(last, True, tokenizer.eos_token_id, stops)
    assert step_text("", tokenizer.decode(last, skip_special_tokens=True)) == STEPS[2]


def test_an_expert_step_that_does_not_continue_the_prompt_is_refused(tiny_path):
    _, tokenizer = load_model(tiny_path)
    with pytest.raises(ValueError, match=r"does not continue the prompt's last line '2. \*\*Soil\*\*'"):
        expert_completion(tokenizer, step_prompt("t", LORE, STEPS[:1], "Soil"), "2. **Water** more", last=False)


def _target_logp(path, rows):
    model, tokenizer = load_model(path)
    prompts = [tokenizer(r["prompt"], add_special_tokens=True)["input_ids"] for r in rows]
    targets = [expert_completion(tokenizer, r["prompt"], r["target"], False) for r in rows]
    return sum(_logp_sum(model, prompts, targets, tokenizer.pad_token_id))


@pytest.mark.parametrize("expert_samples", [0, 1])
def test_expert_samples_put_the_experts_step_in_each_group(tiny_path, tmp_path, monkeypatch, expert_samples):
    """Only an exact step earns a reward (and no ending is penalised); the untrained tiny model never samples
    one. On-policy SRL then has
    no signal and leaves the weights alone; with the expert's step in each group it has one, and the
    expert's steps become likelier. The policy samples num_generations - expert_samples rollouts per prompt."""
    import srl_assets.srl.step_grpo as step_grpo
    import srl_assets.srl.step_reward as step_reward

    monkeypatch.setattr(step_reward, "score_step", lambda step, expert, reward: float(step == expert))
    monkeypatch.setattr(step_grpo, "ends_right", lambda *args: True)  # no format penalty: the reward alone
    sampled = []
    real_rollouts = step_grpo.rollout_steps

    def counting(model, tokenizer, prompts, *args):
        sampled.append(len(prompts))
        return real_rollouts(model, tokenizer, prompts, *args)

    monkeypatch.setattr(step_grpo, "rollout_steps", counting)
    config = StepSRLConfig(**{**SMALL, "num_generations": 3, "expert_samples": expert_samples, "save_steps": 0})
    summary = StepGRPOTrainer(config).train(tiny_path, ROWS, tmp_path / "work", tmp_path / "out")
    assert sampled == [2 * (3 - expert_samples)] * 4 and summary["rollouts_per_step"] == 2 * (3 - expert_samples)
    assert all(r["exact_step_rate"] == 0.0 for r in summary["log"])  # the policy's own rollouts only
    before, after = _target_logp(tiny_path, ROWS), _target_logp(tmp_path / "out", ROWS)
    if expert_samples:
        assert all(r["informative_groups"] == 2 and r["expert_advantage_mean"] > 0 for r in summary["log"])
        assert after > before + 1.0, (before, after)
    else:
        assert all(r["informative_groups"] == 0 for r in summary["log"]) and after == before


@pytest.mark.parametrize("expert_samples", [0, 1])
def test_rft_update_trains_on_the_members_that_reach_keep_reward_only(tiny_path, tmp_path, monkeypatch,
                                                                      expert_samples):
    """update 'rft': a likelihood step on the members whose step reward reaches keep_reward. Only the exact
    step reaches it here, and the untrained tiny model never samples one: without the expert's step in the
    groups nothing is kept and the weights stay; with it, the expert's steps are kept (and become likelier),
    no rollout is."""
    import srl_assets.srl.step_grpo as step_grpo
    import srl_assets.srl.step_reward as step_reward

    monkeypatch.setattr(step_reward, "score_step", lambda step, expert, reward: 1.0 if step == expert else 0.9)
    monkeypatch.setattr(step_grpo, "ends_right", lambda *args: True)
    config = StepSRLConfig(**{**SMALL, "num_generations": 3, "expert_samples": expert_samples, "save_steps": 0,
                              "update": "rft"})
    summary = StepGRPOTrainer(config).train(tiny_path, ROWS, tmp_path / "work", tmp_path / "out")
    assert all(r["kept_rollouts"] == 0 for r in summary["log"])
    before, after = _target_logp(tiny_path, ROWS), _target_logp(tmp_path / "out", ROWS)
    if expert_samples:
        assert all(r["loss"] > 0 for r in summary["log"]) and after > before + 1.0, (before, after)
    else:
        assert all(r["loss"] == 0.0 for r in summary["log"]) and after == before


def test_rft_update_keeps_rollouts_a_grpo_group_would_leave_out(tiny_path, tmp_path, monkeypatch):
    """Every rollout scores 1.0: GRPO sees groups that all agree (no signal, weights unchanged); RFT keeps
    every rollout and trains on them."""
    import srl_assets.srl.step_grpo as step_grpo
    import srl_assets.srl.step_reward as step_reward

    monkeypatch.setattr(step_reward, "score_step", lambda step, expert, reward: 1.0)
    monkeypatch.setattr(step_grpo, "ends_right", lambda *args: True)
    for update in ("grpo", "rft"):
        out = tmp_path / update / "out"
        config = StepSRLConfig(**{**SMALL, "max_steps": 2, "save_steps": 0, "update": update})
        summary = StepGRPOTrainer(config).train(tiny_path, ROWS, tmp_path / update / "work", out)
        before, after = _weights(tiny_path), _weights(out)
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        if update == "grpo":
            assert not changed and all(r["loss"] == 0.0 for r in summary["log"])
        else:
            assert changed and all(r["kept_rollouts"] == 2 * 2 for r in summary["log"])
