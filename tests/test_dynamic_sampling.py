"""Dynamic sampling: only groups whose rewards vary carry a learning signal."""

import doctest

import pytest

from srl_assets.srl import dynamic_sampling
from srl_assets.srl.dynamic_sampling import filter_informative_groups, group_std

# (case, group of rewards, informative at eps = 1e-6?)
GROUPS = [
    ("all format violations", [-1.0, -1.0, -1.0, -1.0], False),
    ("all 0.5", [0.5, 0.5, 0.5, 0.5], False),
    ("all 0.1 (float sum not exact)", [0.1, 0.1, 0.1], False),
    ("all perfect", [1.0, 1.0], False),
    ("single rollout", [0.3], False),
    ("one violation among matches", [-1.0, 0.7, 0.7, 0.7], True),
    ("continuous spread", [0.2, 0.4, 0.6, 0.8], True),
    ("tiny but real spread", [0.5, 0.5001], True),
]


def test_drops_exactly_the_zero_variance_groups():
    rewards = [group for _, group, _ in GROUPS]
    expected = [i for i, (_, _, informative) in enumerate(GROUPS) if informative]
    assert filter_informative_groups(rewards, eps=1e-6) == expected


@pytest.mark.parametrize(
    "eps,expected",
    [
        (0.0, [1, 2]),  # only the constant group goes
        (0.1, [1, 2]),  # both varying groups are above 0.1
        (0.25, [2]),  # std 0.25 is not > 0.25: dropped; std 0.5 kept
        (0.5, []),  # strict inequality: std == eps is dropped
    ],
)
def test_eps_threshold(eps, expected):
    rewards = [[0.3, 0.3], [0.25, 0.75], [0.0, 1.0]]  # stds 0, 0.25, 0.5 (exact in binary)
    assert filter_informative_groups(rewards, eps) == expected


def test_group_std_is_population_std():
    assert group_std([0.0, 1.0]) == 0.5  # population: sqrt(0.25), not sample sqrt(0.5)
    assert group_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == 2.0


def test_errors():
    with pytest.raises(ValueError, match="eps"):
        filter_informative_groups([[0.0, 1.0]], eps=-0.1)
    with pytest.raises(ValueError, match="empty"):
        filter_informative_groups([[]], eps=0.0)


def test_doctests():
    assert doctest.testmod(dynamic_sampling).failed == 0
