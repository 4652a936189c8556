"""RewardNormalizer: each registered mode on hand-computed numbers."""

import doctest
import json
import math

import pytest

import srl_assets.reward_normalizer as reward_normalizer
from srl_assets.reward_normalizer import (
    NoNormalizer,
    make_normalizer,
    normalizer_names,
    register_normalizer,
)

EPS = 1e-6

# (mode, rewards, group_size, expected normalized rewards)
CASES = [
    ("none", [0.0, 1.0, -1.0], 3, [0.0, 1.0, -1.0]),
    # groups (0, 1): mean .5 std .5 | (.5, .5): std 0 -> 0 | (3, 1): mean 2 std 1
    (
        "group",
        [0.0, 1.0, 0.5, 0.5, 3.0, 1.0],
        2,
        [-0.5 / (0.5 + EPS), 0.5 / (0.5 + EPS), 0.0, 0.0, 1 / (1 + EPS), -1 / (1 + EPS)],
    ),
    ("group", [0.7], 1, [0.0]),  # a group of one rollout: advantage 0, no division by zero
    # whole batch: mean 2, population std 2
    ("batch", [0.0, 0.0, 4.0, 4.0], 2, [x / (2 + EPS) for x in (-2, -2, 2, 2)]),
    # first call of "running" = batch statistics: mean 1, std 1
    ("running", [0.0, 2.0], 2, [-1 / (1 + EPS), 1 / (1 + EPS)]),
]


@pytest.mark.parametrize("mode,rewards,group_size,expected", CASES)
def test_normalize(mode, rewards, group_size, expected):
    out = make_normalizer(mode, eps=EPS).normalize(rewards, group_size)
    assert out == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mode", ["none", "group", "batch", "running"])
def test_stats_describe_the_raw_rewards_of_the_last_call(mode):
    normalizer = make_normalizer(mode)
    assert normalizer.stats()["count"] == 0
    normalizer.normalize([1.0, 3.0, 3.0, 5.0], group_size=2)  # mean 3, std sqrt(2)
    stats = normalizer.stats()
    assert stats["count"] == 4
    assert stats["mean"] == pytest.approx(3.0)
    assert stats["std"] == pytest.approx(math.sqrt(2.0))


def test_running_uses_welford_moments_across_calls():
    normalizer = make_normalizer("running", eps=EPS)
    normalizer.normalize([0.0, 2.0], group_size=1)
    # Seen so far: 0, 2, 4 -> mean 2, population variance (4 + 0 + 4) / 3 = 8/3.
    out = normalizer.normalize([4.0], group_size=1)
    std = math.sqrt(8 / 3)
    assert out == pytest.approx([(4.0 - 2.0) / (std + EPS)])
    stats = normalizer.stats()
    assert stats["running_count"] == 3
    assert stats["running_mean"] == pytest.approx(2.0)
    assert stats["running_std"] == pytest.approx(std)
    assert (stats["count"], stats["mean"], stats["std"]) == (1, 4.0, 0.0)  # the last batch


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"'bogus'.*\['batch', 'group', 'none', 'running'\]"):
        make_normalizer("bogus")
    assert normalizer_names() == ["batch", "group", "none", "running"]


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_normalizer("group")(NoNormalizer)


@pytest.mark.parametrize(
    "rewards,group_size,message",
    [
        ([1.0, 2.0, 3.0], 2, "multiple of group_size"),
        ([], 1, "empty"),
        ([1.0], 0, "group_size"),
        ([float("nan"), 1.0], 1, "finite"),
    ],
)
def test_bad_batches(rewards, group_size, message):
    with pytest.raises(ValueError, match=message):
        make_normalizer("group").normalize(rewards, group_size)


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps"):
        make_normalizer("batch", eps=0.0)


def test_doctests():
    assert doctest.testmod(reward_normalizer).failed == 0


def test_running_state_round_trips_and_others_keep_none():
    seen = make_normalizer("running", eps=EPS)
    seen.normalize([0.0, 2.0], group_size=1)
    resumed = make_normalizer("running", eps=EPS)
    resumed.load_state_dict(json.loads(json.dumps(seen.state_dict())))  # as srl_state.json stores it
    assert resumed.normalize([4.0], group_size=1) == seen.normalize([4.0], group_size=1)
    assert resumed.stats() == seen.stats()
    with pytest.raises(ValueError, match=r"lacks \['m2'\]"):
        make_normalizer("running").load_state_dict({"count": 2, "mean": 1.0})
    group = make_normalizer("group")
    assert group.state_dict() == {}
    group.load_state_dict({})
    with pytest.raises(ValueError, match="GroupNormalizer keeps no state"):
        group.load_state_dict({"count": 2})
