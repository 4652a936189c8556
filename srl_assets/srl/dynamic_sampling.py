"""Dynamic sampling: drop prompt groups whose rollouts carry no learning signal.

GRPO scores each rollout against the other rollouts of the same prompt. When every rollout of a
prompt scores the same, every advantage is zero and the group only dilutes the batch, so SRL
(Deng et al., 2025) drops it and samples on.

The step reward is continuous (a similarity in [0, 1], or -1 for a format violation), so the filter
is on the within-group standard deviation, not DAPO's "all correct / all wrong" test. A filter that
looks for all-1 or all-0 groups would keep a group where every rollout broke the format (all -1) or
every rollout scored 0.5 — groups with no signal at all; public reports show that keeping
all-failed groups of a shaped score can wreck the policy (verl-recipe PR #125, OpenRLHF #1270).

>>> filter_informative_groups([[-1.0, -1.0], [0.5, 0.5], [0.2, 0.9]], eps=1e-6)
[2]
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def group_std(rewards: Sequence[float]) -> float:
    """Population standard deviation of one group's rewards.

    `statistics.pstdev` computes with exact fractions, so a group of identical rewards has a
    standard deviation of exactly 0.0 (a float mean of [0.1, 0.1, 0.1] would leave ~1e-17).

    >>> group_std([0.1, 0.1, 0.1])
    0.0
    >>> group_std([0.0, 1.0])
    0.5
    """
    if len(rewards) == 0:
        raise ValueError("group_std of an empty group: each prompt needs at least one rollout")
    return statistics.pstdev(float(r) for r in rewards)


def filter_informative_groups(rewards: Sequence[Sequence[float]], eps: float) -> list[int]:
    """Indices of the groups whose population std is strictly greater than `eps`.

    `rewards[i]` holds the rewards of the rollouts of prompt i. A group with std <= eps is dropped:
    with eps = 0 only exactly-constant groups go; a small positive eps also drops groups whose
    rewards differ by noise only.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return [i for i, group in enumerate(rewards) if group_std(group) > eps]
