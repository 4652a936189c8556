"""RewardNormalizer: turn raw rewards into advantages, one registered variant per name.

- "group":   GRPO (Shao et al., 2024): (r - mean of its group) / (std of its group + eps). Each
             prompt's rollouts are compared with each other only, so prompts of different
             difficulty weigh the same.
- "batch":   (r - batch mean) / (batch std + eps): one scale for the whole batch.
- "running": (r - running mean) / (running std + eps), Welford's running moments over every reward
             seen so far (this batch included): a slowly moving scale that does not jump
             between batches.
- "none":    the rewards unchanged.

Standard deviations are population ones (ddof = 0): a group of one rollout then gets an
advantage of 0 instead of a division by zero.

>>> make_normalizer("group").normalize([0.0, 1.0, 0.5, 0.5], group_size=2)
[-0.999998000004, 0.999998000004, 0.0, 0.0]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from srl_assets.registry import Registry

DEFAULT_EPS = 1e-6

_REGISTRY: Registry[type[RewardNormalizer]] = Registry("reward normalizer")
register_normalizer = _REGISTRY.register


def normalizer_names() -> list[str]:
    """The registered normalizer names, sorted."""
    return _REGISTRY.names()


def make_normalizer(name: str, **kwargs: Any) -> RewardNormalizer:
    """Build the normalizer registered as `name`; keyword arguments go to its constructor."""
    return _REGISTRY.get(name)(**kwargs)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / len(values)
    return mean, math.sqrt(var)


class RewardNormalizer(ABC):
    """Base class: `normalize` maps a flat batch of rewards, grouped by prompt, to advantages.

    The batch is laid out prompt by prompt: rewards[i * group_size:(i + 1) * group_size] are the
    rollouts of prompt i. `stats()` describes the raw rewards of the last call.
    """

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = eps
        self._last: dict[str, float] = {"mean": 0.0, "std": 0.0, "count": 0}

    def normalize(self, rewards: Sequence[float], group_size: int) -> list[float]:
        """Validate the batch, record its stats, and return the normalized rewards."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if len(rewards) == 0:
            raise ValueError("rewards is empty")
        if len(rewards) % group_size:
            raise ValueError(
                f"len(rewards) = {len(rewards)} is not a multiple of group_size = {group_size}"
            )
        values = [float(r) for r in rewards]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"rewards must be finite, got {values}")
        mean, std = _mean_std(values)
        self._last = {"mean": mean, "std": std, "count": len(values)}
        return self._normalize(values, group_size)

    @abstractmethod
    def _normalize(self, rewards: list[float], group_size: int) -> list[float]: ...

    def stats(self) -> dict[str, float]:
        """Mean, std and count of the raw rewards of the last `normalize` call."""
        return dict(self._last)

    def state_dict(self) -> dict[str, float]:
        """What a resumed run needs to normalize the next batch as an uninterrupted one would: nothing,
        unless the normalizer carries moments across calls (``running``)."""
        return {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state across calls, got {sorted(state)}")


@register_normalizer("none")
class NoNormalizer(RewardNormalizer):
    """Rewards pass through unchanged."""

    def _normalize(self, rewards: list[float], group_size: int) -> list[float]:
        return list(rewards)


@register_normalizer("group")
class GroupNormalizer(RewardNormalizer):
    """GRPO: each reward against the mean and std of its own prompt's group."""

    def _normalize(self, rewards: list[float], group_size: int) -> list[float]:
        out: list[float] = []
        for start in range(0, len(rewards), group_size):
            group = rewards[start : start + group_size]
            mean, std = _mean_std(group)
            out.extend((r - mean) / (std + self.eps) for r in group)
        return out


@register_normalizer("batch")
class BatchNormalizer(RewardNormalizer):
    """Each reward against the mean and std of the whole batch."""

    def _normalize(self, rewards: list[float], group_size: int) -> list[float]:
        mean, std = self._last["mean"], self._last["std"]
        return [(r - mean) / (std + self.eps) for r in rewards]


@register_normalizer("running")
class RunningNormalizer(RewardNormalizer):
    """Each reward against Welford's running mean and std over all rewards seen so far."""

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        super().__init__(eps)
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the running mean

    @property
    def std(self) -> float:
        """Running population standard deviation."""
        return math.sqrt(self._m2 / self.count) if self.count else 0.0

    def _normalize(self, rewards: list[float], group_size: int) -> list[float]:
        # Welford's update, one reward at a time: numerically stable over a long run.
        for r in rewards:
            self.count += 1
            delta = r - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (r - self.mean)
        return [(r - self.mean) / (self.std + self.eps) for r in rewards]

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self._m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        missing = {"count", "mean", "m2"} - set(state)
        if missing:
            raise ValueError(f"running normalizer state lacks {sorted(missing)}")
        self.count, self.mean, self._m2 = int(state["count"]), float(state["mean"]), float(state["m2"])

    def stats(self) -> dict[str, float]:
        """The last batch's stats plus running_mean, running_std and running_count."""
        return {
            **self._last,
            "running_mean": self.mean,
            "running_std": self.std,
            "running_count": self.count,
        }
