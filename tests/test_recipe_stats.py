"""Recipe comparison statistics on hand-built paired records: McNemar, Wilson, bootstrap, errors, outputs."""

import random

import pytest

from srl_assets.performance.performance_tracker import EvalRecord
from srl_assets.performance.recipe_stats import (
    beats,
    compare_recipes,
    comparison_plot,
    markdown_table,
    mcnemar_exact,
)


def rec(candidate, task, passed, score=None, skills="a", failed=(), format_ok=True):
    if score is None:
        score = 1.0 if passed else 0.0
    if not passed and not failed and format_ok:
        failed = skills[:1]  # a failed task names at least one failed skill
    return EvalRecord(candidate=candidate, task_id=task, skills=tuple(skills), passed=passed,
                      score=score, failed_skills=tuple(failed), format_ok=format_ok,
                      output_tokens=10, latency_s=0.1)


def paired(outcomes: dict[str, str], scores: dict[str, list[float]] | None = None):
    """Records from one pass/fail string per recipe ('1' pass, '0' fail), task i = 't{i:02d}'."""
    out = []
    for name, s in outcomes.items():
        for i, c in enumerate(s):
            score = scores[name][i] if scores else None
            out.append(rec(name, f"t{i:02d}", c == "1", score))
    return out


# start passes t00-t01; srl passes t00-t07: 6 discordant pairs, all for srl -> p = 2 * 0.5**6.
# rlvr passes t00-t02 and t08: vs start 2 for rlvr (t02, t08), 0 for start -> p = 2 * 0.5**2 = 0.5;
# vs srl 1 for rlvr (t08), 5 for srl (t03-t07) -> p = 2 * (1 + 6) / 64 = 0.21875.
OUTCOMES = {
    "start": "1100000000",
    "srl": "1111111100",
    "rlvr": "1110000010",
}


@pytest.fixture(scope="module")
def cmp3():
    return compare_recipes(paired(OUTCOMES), ["start", "srl", "rlvr"], n_boot=500, seed=0)


@pytest.mark.parametrize("a_only, b_only, expected", [
    (0, 6, 2 * 0.5 ** 6),          # all discordant pairs one way
    (6, 0, 2 * 0.5 ** 6),          # symmetric
    (1, 3, 2 * (1 + 4) / 16),      # P(X <= 1 | n=4) doubled = 0.625
    (2, 2, 1.0),                   # balanced: no evidence
    (0, 0, 1.0),                   # no discordant pairs at all
    (1, 5, 2 * (1 + 6) / 64),      # 0.21875
])
def test_mcnemar_exact_by_hand(a_only, b_only, expected):
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, abs=1e-12)


def test_summary_counts_wilson_and_mcnemar(cmp3):
    s = cmp3.summary.set_index("recipe")
    assert list(cmp3.summary["recipe"]) == ["start", "srl", "rlvr"]  # caller's order kept
    assert (s["n_tasks"] == 10).all()
    assert s.loc["start", "pass_rate"] == 0.2 and s.loc["srl", "pass_rate"] == 0.8
    # Wilson 95 %, 8/10 is the textbook (0.4902, 0.9433); 2/10 is its mirror image.
    assert s.loc["srl", ["pass_lo", "pass_hi"]].tolist() == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert s.loc["start", ["pass_lo", "pass_hi"]].tolist() == pytest.approx([0.0567, 0.5098], abs=1e-4)
    assert s.loc["srl", "delta_vs_start"] == pytest.approx(0.6)
    assert s.loc["srl", "p_vs_start"] == pytest.approx(0.03125)
    assert s.loc["rlvr", "delta_vs_start"] == pytest.approx(0.2)
    assert s.loc["rlvr", "p_vs_start"] == pytest.approx(0.5)
    assert s.loc["start", "delta_vs_start"] == 0.0 and s.loc["start", "p_vs_start"] == 1.0
    # scores are 1/0 here, so the mean score is the pass rate and its interval brackets it
    assert s.loc["srl", "mean_score"] == pytest.approx(0.8)
    assert s.loc["srl", "score_lo"] <= 0.8 <= s.loc["srl", "score_hi"]


def test_pairwise_every_ordered_pair_and_mirror(cmp3):
    pw = cmp3.pairwise
    assert len(pw) == 3 * 2
    assert set(zip(pw["a"], pw["b"])) == {(a, b) for a in OUTCOMES for b in OUTCOMES if a != b}
    row = pw[(pw["a"] == "rlvr") & (pw["b"] == "srl")].iloc[0]
    assert (row["a_only"], row["b_only"], row["n_tasks"]) == (1, 5, 10)
    assert row["pass_a"] == pytest.approx(0.4) and row["pass_b"] == pytest.approx(0.8)
    assert row["delta"] == pytest.approx(-0.4)
    assert row["mcnemar_p"] == pytest.approx(0.21875)
    assert row["delta_lo"] <= -0.4 <= row["delta_hi"]  # (p = 0.22: the interval may well reach 0)
    mirror = pw[(pw["a"] == "srl") & (pw["b"] == "rlvr")].iloc[0]
    assert (mirror["a_only"], mirror["b_only"]) == (5, 1)
    assert mirror["mcnemar_p"] == row["mcnemar_p"]
    # percentile intervals of a negated statistic are the negated, swapped interval
    assert (mirror["delta_lo"], mirror["delta_hi"]) == pytest.approx((-row["delta_hi"], -row["delta_lo"]))


def test_bootstrap_is_seeded_and_independent_of_record_order():
    records = paired(OUTCOMES, scores={
        "start": [0.9, 0.7, 0.5, 0.2, 0.1, 0.4, 0.3, 0.0, 0.6, 0.2],
        "srl": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.1],
        "rlvr": [1.0, 1.0, 1.0, 0.3, 0.2, 0.1, 0.0, 0.4, 1.0, 0.6],
    })
    order = ["start", "srl", "rlvr"]
    first = compare_recipes(records, order, n_boot=300, seed=7)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    again = compare_recipes(shuffled, order, n_boot=300, seed=7)
    assert first.summary.equals(again.summary) and first.pairwise.equals(again.pairwise)
    other = compare_recipes(records, order, n_boot=300, seed=8)
    assert not first.summary[["score_lo", "score_hi"]].equals(other.summary[["score_lo", "score_hi"]])
    # the point estimates do not depend on the seed
    assert first.summary["mean_score"].tolist() == other.summary["mean_score"].tolist()


def test_bootstrap_intervals_collapse_without_variation_and_match_normal_width():
    # Every task the same score: every resample has that mean.
    same = paired({"start": "1" * 8, "sft": "1" * 8}, scores={"start": [0.5] * 8, "sft": [0.5] * 8})
    c = compare_recipes(same, ["start", "sft"], n_boot=200)
    assert c.summary["score_lo"].tolist() == [0.5, 0.5] and c.summary["score_hi"].tolist() == [0.5, 0.5]
    row = c.pairwise.iloc[0]
    assert (row["delta_lo"], row["delta_hi"], row["mcnemar_p"]) == (0.0, 0.0, 1.0)
    # 100 tasks at p = 0.5: the interval's half width is close to 1.96 * sqrt(.25 / 100) = 0.098.
    half = compare_recipes(paired({"start": "10" * 50}), ["start"], n_boot=2000, seed=0).summary.iloc[0]
    assert (half["score_hi"] - half["score_lo"]) / 2 == pytest.approx(0.098, abs=0.015)


def test_per_skill_pass_rates():
    records = [
        rec("start", "t1", True, skills="ab"),
        rec("start", "t2", False, 0.5, skills="ab", failed="b"),
        rec("start", "t3", False, 0.0, skills="b", format_ok=False),  # a format violation passes no skill
        rec("srl", "t1", True, skills="ab"),
        rec("srl", "t2", True, skills="ab"),
        rec("srl", "t3", False, 0.5, skills="b", failed="b"),
    ]
    sk = compare_recipes(records, ["start", "srl"], n_boot=50).skills.set_index("skill")
    assert list(sk.columns) == ["n_tasks", "start", "srl"]
    assert sk.loc["a"].tolist() == [2, 1.0, 1.0]
    assert sk.loc["b"].tolist() == [3, pytest.approx(1 / 3), pytest.approx(2 / 3)]


@pytest.mark.parametrize("records, order, match", [
    # unpaired: sft misses t02 and has t09 instead; the message names the recipe and both task ids
    (paired({"start": "110"}) + [rec("sft", "t00", True), rec("sft", "t01", True), rec("sft", "t09", True)],
     ["start", "sft"], r"recipe 'sft' was not evaluated on the same tasks.*'t02'.*'t09'"),
    # a recipe in order without records
    (paired({"start": "110"}), ["start", "srl"], r"\['srl'\].*no evaluation records"),
    # a task evaluated twice for one recipe
    (paired({"start": "110", "sft": "011"}) + [rec("sft", "t01", False)], ["start", "sft"],
     r"more than once.*recipe 'sft'.*'t01'"),
    # the same task id with different skills is not the same task
    (paired({"start": "1"}) + [rec("sft", "t00", True, skills="b")], ["start", "sft"],
     r"task 't00'.*not the same task"),
    # a recipe listed twice
    (paired({"start": "1"}), ["start", "start"], r"more than once in order"),
    # a record the performance report would also reject
    ([rec("start", "t00", True, score=1.5)], ["start"], r"score must be in \[0, 1\]"),
    ([], [], r"at least one recipe"),
])
def test_invalid_input_raises(records, order, match):
    with pytest.raises(ValueError, match=match):
        compare_recipes(records, order, n_boot=10)


def test_n_boot_must_be_positive():
    with pytest.raises(ValueError, match="n_boot >= 1, got 0"):
        compare_recipes(paired({"start": "1"}), ["start"], n_boot=0)


def test_records_of_other_candidates_are_ignored():
    c = compare_recipes(paired({"start": "10", "srl": "11", "paid": "0"}), ["start", "srl"], n_boot=10)
    assert c.order == ("start", "srl") and c.task_ids == ("t00", "t01")


@pytest.mark.parametrize("a, b, expected", [
    ("srl", "start", True),    # 0.8 > 0.2
    ("start", "srl", False),
    ("rlvr", "tie", False),    # 0.4 = 0.4, on different tasks: a tie is not a win either way
    ("tie", "rlvr", False),
])
def test_beats(a, b, expected):
    c = compare_recipes(paired({**OUTCOMES, "tie": "0000111100"}), [*OUTCOMES, "tie"], n_boot=10)
    assert beats(c, a, b) is expected


def test_beats_unknown_recipe_raises(cmp3):
    with pytest.raises(ValueError, match="recipe 'sft' is not in this comparison"):
        beats(cmp3, "sft", "start")


def test_markdown_table(cmp3):
    lines = markdown_table(cmp3).splitlines()
    assert lines[0] == "| recipe | pass rate [95% CI] | mean score [95% CI] | Δ vs start | McNemar p |"
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| start | 0.200 [0.057, 0.510] |") and lines[2].endswith("| — | — |")
    assert lines[3].startswith("| srl | 0.800 [0.490, 0.943] |") and lines[3].endswith("| +0.600 | 0.031 |")
    with_skills = markdown_table(cmp3, include_skills=True)
    assert "| skill | tasks | start | srl | rlvr |" in with_skills
    assert "| a | 10 | 0.200 | 0.800 | 0.400 |" in with_skills


def test_comparison_plot_writes_png(tmp_path, cmp3):
    path = comparison_plot(cmp3, tmp_path / "plots" / "compare.png", "plant: recipe comparison")
    assert path == tmp_path / "plots" / "compare.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == ["compare.png"]  # no temporary file left
