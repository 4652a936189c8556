"""WeaknessDetector: threshold rule, significant regressions, severity, the pooled z-test."""

import math

import pytest

from srl_assets.performance.performance_tracker import skill_stat
from srl_assets.performance.weakness_detector import (
    WeaknessDetector,
    normal_cdf,
    two_proportion_p_value,
)


def stats(**counts):
    """skill=(passed, n) → {skill: SkillStat}."""
    return {skill: skill_stat(p, n) for skill, (p, n) in counts.items()}


def detect(current, previous=None, **kw):
    return WeaknessDetector(**kw).detect("building", "r2", current, previous)


def test_p_value_matches_hand_computation():
    # 45/50 -> 20/50: pooled p = 65/100 = 0.65; SE = sqrt(0.65 * 0.35 * (1/50 + 1/50)) = 0.0953939
    # z = (0.9 - 0.4) / SE = 5.2414; one-sided p = 1 - Φ(z)
    z = 0.5 / math.sqrt(0.65 * 0.35 * 0.04)
    assert z == pytest.approx(5.2414, abs=1e-4)
    assert two_proportion_p_value(45, 50, 20, 50) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert two_proportion_p_value(45, 50, 20, 50) < 1e-6
    # 9/10 -> 7/10: pooled 0.8; SE = sqrt(0.16 * 0.2) = 0.178885; z = 1.1180; p = 0.1318
    assert two_proportion_p_value(9, 10, 7, 10) == pytest.approx(0.1318, abs=1e-4)


@pytest.mark.parametrize("x1, n1, x2, n2, expected", [
    (5, 10, 5, 10, 0.5),      # no change: z = 0
    (10, 10, 10, 10, 0.5),    # no variance at all
    (7, 10, 9, 10, 0.8682),   # improvement: the mirror of 9/10 -> 7/10
])
def test_p_value_edge_cases(x1, n1, x2, n2, expected):
    assert two_proportion_p_value(x1, n1, x2, n2) == pytest.approx(expected, abs=1e-4)


def test_normal_cdf_known_values():
    assert normal_cdf(0.0) == pytest.approx(0.5)
    assert normal_cdf(1.96) == pytest.approx(0.9750, abs=1e-4)
    assert normal_cdf(-1.6449) == pytest.approx(0.05, abs=1e-4)


@pytest.mark.parametrize("passed, n, weak, severity", [
    (5, 10, True, "medium"),   # 0.5 < 0.6
    (2, 10, True, "high"),     # 0.2 < 0.6 / 2
    (6, 10, False, None),      # exactly at the threshold is not weak
    (9, 10, False, None),
    (0, 4, False, None),       # n < min_n: too little evidence to act on
    (0, 0, False, None),       # never exercised
])
def test_threshold_rule(passed, n, weak, severity):
    found = detect(stats(room_area=(passed, n)))
    assert bool(found) == weak
    if weak:
        (w,) = found
        assert (w.skill, w.reason, w.severity, w.p_value) == ("room_area", "below_threshold", severity, None)
        assert (w.model_type, w.report_id, w.threshold) == ("building", "r2", 0.6)
        assert w.pass_rate == pytest.approx(passed / n)


def test_significant_drop_is_flagged_regressed():
    (w,) = detect(stats(room_area=(20, 50)), stats(room_area=(45, 50)))
    assert w.reason == "regressed"
    assert w.p_value is not None and w.p_value < 0.05
    assert (w.pass_rate, w.previous_pass_rate) == (pytest.approx(0.4), pytest.approx(0.9))
    assert w.severity == "high"  # p < alpha / 10


@pytest.mark.parametrize("prev, cur, kw, expected", [
    # case: (previous passed, n), (current passed, n), detector kwargs, expected (reason, severity) or None
    ((9, 10), (7, 10), {}, None),                              # drop within noise (p = 0.13), still >= 0.6
    ((7, 10), (9, 10), {}, None),                              # improvement is never a weakness
    ((20, 50), (45, 50), {}, None),                            # big improvement
    ((4, 4), (0, 4), {}, None),                                # min_n not met on either side
    ((4, 4), (3, 5), {"min_n": 5}, None),                      # previous too small to compare; 0.6 not < 0.6
    ((7, 10), (5, 10), {}, ("below_threshold", "medium")),     # 0.5 < 0.6; the drop is noise (p = 0.18)
    ((9, 10), (5, 10), {}, ("regressed", "medium")),           # p = 0.0255 and below threshold
    ((50, 50), (42, 50), {}, ("regressed", "high")),           # p = 0.0016 < alpha / 10, still above threshold
    ((95, 100), (85, 100), {}, ("regressed", "low")),          # p = 0.0092: significant, still above threshold
])
def test_regression_rule(prev, cur, kw, expected):
    found = detect(stats(s=cur), stats(s=prev), **kw)
    if expected is None:
        assert found == []
    else:
        (w,) = found
        assert (w.reason, w.severity) == expected


def test_regression_wins_when_both_rules_hold():
    # 9/10 -> 2/10 is below threshold and a significant drop: one weakness, reported as regressed
    (w,) = detect(stats(s=(2, 10)), stats(s=(9, 10)))
    assert w.reason == "regressed" and w.p_value < 0.05 and w.severity == "high"


def test_sorted_by_severity_then_skill():
    found = detect(stats(b=(5, 10), a=(5, 10), c=(1, 10), d=(9, 10)))
    assert [(w.skill, w.severity) for w in found] == [("c", "high"), ("a", "medium"), ("b", "medium")]


@pytest.mark.parametrize("kw", [{"threshold": 0.0}, {"threshold": 1.5}, {"alpha": 0.0}, {"alpha": 1.0},
                                {"min_n": 0}])
def test_invalid_settings_rejected(kw):
    with pytest.raises(ValueError):
        WeaknessDetector(**kw)
