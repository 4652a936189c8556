"""DynamicModelSelector: quality-for-cost choices, tie breaks, skipping candidates without evidence."""

import pytest

from srl_assets.performance.performance_tracker import skill_stat, wilson_interval
from srl_assets.selection.dynamic_model_selector import (
    Candidate,
    DynamicModelSelector,
    SelectionWeights,
    markdown_table,
)

# A cheaper, slightly worse local checkpoint against an expensive, better paid model.
CANDIDATES = {
    "rlvr": Candidate("rlvr", "local", cost_per_1k_tokens=0.0, mean_latency_s=1.0),
    "paid-ft": Candidate("paid-ft", "paid", cost_per_1k_tokens=2.0, mean_latency_s=0.5),
    "base": Candidate("base", "local", cost_per_1k_tokens=0.0, mean_latency_s=1.0),
}
STATS = {"rlvr": skill_stat(17, 20), "paid-ft": skill_stat(19, 20)}

LOCAL_LOWER = wilson_interval(17, 20)[0]  # ≈ 0.6396
PAID_LOWER = wilson_interval(19, 20)[0]   # ≈ 0.7639


@pytest.mark.parametrize("weights, chosen, runner_up, margin", [
    # default weights price cost: local 0.6396 − 0.05·1.0 beats paid 0.7639 − 0.1·2.0 − 0.05·0.5
    (SelectionWeights(), "rlvr", "paid-ft",
     (LOCAL_LOWER - 0.05) - (PAID_LOWER - 0.2 - 0.025)),
    # nearly free cost and no latency weight: the better paid model wins
    (SelectionWeights(quality=1.0, cost=0.01, latency=0.0), "paid-ft", "rlvr",
     (PAID_LOWER - 0.02) - LOCAL_LOWER),
])
def test_choice_depends_on_weights(weights, chosen, runner_up, margin):
    sel = DynamicModelSelector(weights).select("building", STATS, CANDIDATES, skill="room_area")
    assert (sel.model_type, sel.skill, sel.chosen, sel.runner_up) == ("building", "room_area", chosen, runner_up)
    assert sel.margin == pytest.approx(margin, abs=1e-9)
    assert sel.margin > 0
    assert sel.score - sel.runner_up_score == pytest.approx(sel.margin)
    assert f"'{chosen}'" in sel.explanation and f"beats '{runner_up}'" in sel.explanation
    assert f"{sel.margin:.3f}" in sel.explanation


def test_known_margin_under_default_weights():
    sel = DynamicModelSelector().select("building", STATS, CANDIDATES)
    assert sel.score == pytest.approx(0.5896, abs=1e-4)
    assert sel.runner_up_score == pytest.approx(0.5389, abs=1e-4)
    assert sel.margin == pytest.approx(0.0507, abs=1e-4)
    assert sel.skill == "overall"


def test_wilson_lower_bound_rewards_evidence():
    # 3/3 has a higher raw rate than 90/100 but far less evidence (lower bounds 0.44 vs 0.83)
    cands = {n: Candidate(n, "local", 0.0, 0.0) for n in ("lucky", "proven")}
    stats = {"lucky": skill_stat(3, 3), "proven": skill_stat(90, 100)}
    assert DynamicModelSelector().select("tree", stats, cands).chosen == "proven"


def test_candidates_without_evidence_are_skipped():
    stats = {**STATS, "base": skill_stat(0, 0)}
    sel = DynamicModelSelector().select("building", stats, CANDIDATES)
    assert "base" not in (sel.chosen, sel.runner_up)

    only = DynamicModelSelector().select("building", {"rlvr": STATS["rlvr"], "base": skill_stat(0, 0)}, CANDIDATES)
    assert (only.chosen, only.runner_up, only.runner_up_score, only.margin) == ("rlvr", None, None, None)
    assert "only candidate" in only.explanation

    with pytest.raises(ValueError, match="no candidate has evaluated tasks"):
        DynamicModelSelector().select("building", {"base": skill_stat(0, 0)}, CANDIDATES)


@pytest.mark.parametrize("costs, chosen", [
    ({"a": 2.0, "b": 1.0}, "b"),  # equal utility (cost weight 0): the cheaper one
    ({"a": 1.0, "b": 1.0}, "a"),  # equal utility and cost: the name
])
def test_ties(costs, chosen):
    cands = {n: Candidate(n, "paid", c, 0.0) for n, c in costs.items()}
    stats = {n: skill_stat(8, 10) for n in costs}
    sel = DynamicModelSelector(SelectionWeights(cost=0.0, latency=0.0)).select("sound", stats, cands)
    assert sel.chosen == chosen and sel.margin == 0.0


def test_select_all_and_markdown():
    per_skill = {
        "room_area": STATS,
        "door_count": {"rlvr": skill_stat(5, 10), "paid-ft": skill_stat(10, 10)},
        "never_tested": {"rlvr": skill_stat(0, 0), "paid-ft": skill_stat(0, 0)},  # left out
    }
    sels = DynamicModelSelector().select_all("building", per_skill, CANDIDATES)
    assert [(s.skill, s.chosen) for s in sels] == [("door_count", "paid-ft"), ("room_area", "rlvr")]
    md = markdown_table(sels)
    assert "| building | room_area | rlvr |" in md and "| building | door_count | paid-ft |" in md
    assert "beats 'paid-ft'" in md and "beats 'rlvr'" in md


@pytest.mark.parametrize("make", [
    lambda: Candidate("x", "cloud", 0.0, 0.0),
    lambda: Candidate("x", "local", -1.0, 0.0),
    lambda: SelectionWeights(quality=0.0),
    lambda: SelectionWeights(cost=-0.1),
])
def test_invalid_config_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_stats_for_unknown_candidate_rejected():
    with pytest.raises(ValueError, match="no Candidate"):
        DynamicModelSelector().select("building", {"mystery": skill_stat(1, 2)}, CANDIDATES)
