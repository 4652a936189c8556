"""The generation budget: one default for every place the policy writes a whole trajectory, and the
performance report's check that the stored expert trajectories fit in it (counted with the checkpoint's own
tokenizer, plus the EOS that ends a generated trajectory)."""

import pytest

from srl_assets.assets.paid import PaidCandidatesConfig, PaidFinetuneJobsConfig
from srl_assets.assets.performance import PerformanceReportConfig
from srl_assets.assets.recipes import RecipeComparisonConfig
from srl_assets.assets.training import RLVRConfig
from srl_assets.models.tiny import train_bpe_tokenizer
from srl_assets.paid.evaluation import PaidEvalConfig
from srl_assets.performance.generation_budget import budget_fits, trajectory_tokens
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.serving.routes.generate import GenerateRequest
from srl_assets.training.configs import RFTConfig

TRAJECTORIES = ['1. **Style** Malay builders use the stilt style.\n2. **Final spec** {"floors": 2, "roof": "hipped"}',
                '1. **Style** Sahelian builders use the sudanese style.\n2. **Final spec** {"floors": 1}']


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    tokenizer = train_bpe_tokenizer(TRAJECTORIES * 20, vocab_size=300)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def test_trajectory_tokens_are_the_policys_tokens_plus_eos(checkpoint):
    folder, tokenizer = checkpoint
    lengths = trajectory_tokens(folder, TRAJECTORIES)
    assert lengths == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in TRAJECTORIES]
    assert trajectory_tokens(folder, []) == []


def test_budget_fits_at_the_longest_trajectory_and_fails_one_token_below(checkpoint):
    lengths = trajectory_tokens(checkpoint[0], TRAJECTORIES)
    longest = max(lengths)
    passed, meta = budget_fits(lengths, longest)
    assert passed and meta["over_budget"] == 0 and meta["longest_expert_trajectory"] == longest
    passed, meta = budget_fits(lengths, longest - 1)
    assert not passed and meta == {"generation_budget": longest - 1, "expert_trajectories": 2,
                                   "longest_expert_trajectory": longest, "over_budget": 1}


def test_a_checkpoint_without_a_tokenizer_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: no tokenizer"):
        trajectory_tokens(tmp_path, TRAJECTORIES)


def test_every_whole_trajectory_default_is_the_one_budget():
    rlvr = RLVRConfig()
    assert {RFTConfig().max_new_tokens, rlvr.rft.max_new_tokens, rlvr.grpo.max_completion_length,
            rlvr.ppo.max_new_tokens, rlvr.dpo.max_new_tokens, PerformanceReportConfig().max_new_tokens,
            RecipeComparisonConfig().max_new_tokens, PaidCandidatesConfig().max_new_tokens,
            PaidFinetuneJobsConfig().preference_max_new_tokens, PaidEvalConfig().max_new_tokens,
            GenerateRequest(model_type="plant", params={}).max_new_tokens} == {TRAJECTORY_MAX_NEW_TOKENS}
