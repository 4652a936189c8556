"""Find the skills a checkpoint is weak at (no Dagster here).

A skill is weak in a report when, with at least ``min_n`` evaluated tasks exercising it:

* ``below_threshold``: its pass rate is under ``threshold``; or
* ``regressed``: its pass rate dropped against the previous report by more than noise explains.

"More than noise" is a one-sided two-proportion z-test with a pooled variance. Under the null
hypothesis that both reports share one true pass rate, the best estimate of it is the pooled rate
p = (x1 + x2) / (n1 + n2), and the difference of the observed rates has standard error
sqrt(p(1 − p)(1/n1 + 1/n2)). The statistic z = (p1 − p2) / SE is approximately standard normal,
and the p-value of "the rate dropped" is P(Z ≥ z) = 1 − Φ(z). With 9/10 → 7/10 that is 0.13 (a
drop small sets produce by chance); with 45/50 → 20/50 it is below 1e-6.

When both rules hold, the skill is reported once, as ``regressed`` (the more specific finding,
with its p-value and the previous rate); severity accounts for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from srl_assets.performance.performance_tracker import SkillStat


def normal_cdf(z: float) -> float:
    """Φ(z), the standard normal CDF: ½ (1 + erf(z / √2))."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value that rate 2 (x2/n2, e.g. the current report) is below rate 1 (x1/n1).

    Pooled z-test: z = (x1/n1 − x2/n2) / sqrt(p(1 − p)(1/n1 + 1/n2)), p = (x1 + x2)/(n1 + n2);
    p-value = 1 − Φ(z), computed as ½ erfc(z / √2) so that tiny p-values keep their precision.
    When both rates are 0 or both are 1 there is no variance and no difference: z = 0, p = 0.5.

    >>> round(two_proportion_p_value(9, 10, 7, 10), 4)
    0.1318
    """
    for x, n in ((x1, n1), (x2, n2)):
        if n <= 0 or x < 0 or x > n:
            raise ValueError(f"two_proportion_p_value needs 0 <= x <= n and n > 0, got x={x}, n={n}")
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0.0:
        return 0.5
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class Weakness:
    """One weak skill of a model type in one report."""

    model_type: str
    skill: str
    pass_rate: float
    threshold: float
    previous_pass_rate: float | None
    reason: str  # "below_threshold" | "regressed"
    severity: str  # "high" | "medium" | "low"
    p_value: float | None  # regressions only
    report_id: str


@dataclass(frozen=True)
class WeaknessDetector:
    """Flags weak skills; see the module docstring for the two rules.

    threshold: pass rate under which a skill is weak.
    alpha: significance level of the regression test (one-sided).
    min_n: fewest tasks exercising a skill (in each report compared) before any verdict: with
        fewer, a pass rate says too little to act on and no weakness is reported.

    Severity:
        high   — pass rate under threshold / 2, or a regression with p < alpha / 10;
        low    — a significant regression (alpha / 10 <= p < alpha) that leaves the pass rate at
                 or above the threshold: worth watching, not yet failing the bar;
        medium — everything else (under the threshold but not under half of it, possibly with a
                 moderate regression).
    """

    threshold: float = 0.6
    alpha: float = 0.05
    min_n: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_n < 1:
            raise ValueError(f"min_n must be >= 1, got {self.min_n}")

    def detect(self, model_type: str, report_id: str, current: dict[str, SkillStat],
               previous: dict[str, SkillStat] | None) -> list[Weakness]:
        """Weaknesses of ``current`` (skill → stats), compared with ``previous`` when given.
        Sorted by severity (high first), then skill name."""
        found = []
        for skill in sorted(current):
            cur = current[skill]
            if cur.n < self.min_n:
                continue
            rate = cur.passed / cur.n
            prev = (previous or {}).get(skill)
            prev_rate = prev.passed / prev.n if prev is not None and prev.n > 0 else None

            p_value = None
            if prev is not None and prev.n >= self.min_n and rate < prev_rate:
                p = two_proportion_p_value(prev.passed, prev.n, cur.passed, cur.n)
                p_value = p if p < self.alpha else None
            below = rate < self.threshold
            if p_value is None and not below:
                continue
            found.append(Weakness(
                model_type=model_type, skill=skill, pass_rate=rate, threshold=self.threshold,
                previous_pass_rate=prev_rate,
                reason="regressed" if p_value is not None else "below_threshold",
                severity=self.severity(rate, p_value), p_value=p_value, report_id=report_id,
            ))
        rank = {"high": 0, "medium": 1, "low": 2}
        return sorted(found, key=lambda w: (rank[w.severity], w.skill))

    def severity(self, pass_rate: float, p_value: float | None) -> str:
        """The severity rule of the class docstring (``p_value`` None: no significant regression)."""
        if pass_rate < self.threshold / 2 or (p_value is not None and p_value < self.alpha / 10):
            return "high"
        if p_value is not None and pass_rate >= self.threshold:
            return "low"
        return "medium"
