"""PerformanceTracker: metrics on a hand-built set of verdicts, Wilson intervals, rows, outputs."""

import pytest

from srl_assets.performance.performance_tracker import (
    EvalRecord,
    PerformanceTracker,
    markdown_table,
    per_skill_rows,
    plot_pass_rates,
    report_rows,
    wilson_interval,
)

SKILLS = ["a", "b", "c"]  # "c" is exercised by no task: it must still appear, with n = 0


def rec(candidate, task, skills, passed, score, failed=(), format_ok=True, tokens=100, latency=1.0):
    return EvalRecord(candidate=candidate, task_id=task, skills=tuple(skills), passed=passed,
                      score=score, failed_skills=tuple(failed), format_ok=format_ok,
                      output_tokens=tokens, latency_s=latency)


RECORDS = [
    # base: 1 of 4 passed; one format violation (it fails every skill its task exercises)
    rec("base", "t1", "ab", False, 0.5, failed="a", tokens=100, latency=1.0),
    rec("base", "t2", "a", True, 1.0, tokens=120, latency=1.0),
    rec("base", "t3", "b", False, 0.0, format_ok=False, tokens=300, latency=2.0),
    rec("base", "t4", "ab", False, 0.0, failed="ab", tokens=80, latency=1.0),
    # rlvr: 4 of 6 passed, skill "a" always passes, "b" fails twice
    rec("rlvr", "t1", "ab", True, 1.0, tokens=50, latency=0.5),
    rec("rlvr", "t2", "ab", True, 1.0, tokens=50, latency=0.5),
    rec("rlvr", "t3", "a", True, 1.0, tokens=50, latency=0.5),
    rec("rlvr", "t4", "b", False, 0.5, failed="b", tokens=70, latency=0.5),
    rec("rlvr", "t5", "ab", False, 0.5, failed="b", tokens=70, latency=0.5),
    rec("rlvr", "t6", "a", True, 1.0, tokens=60, latency=0.5),
]


@pytest.fixture
def reports():
    return PerformanceTracker().summarize(RECORDS, "building", SKILLS)


@pytest.mark.parametrize("successes, n, expected", [
    (8, 10, (0.4902, 0.9433)),   # the textbook example
    (0, 10, (0.0, 0.2775)),      # interval does not collapse at p = 0 (Wald would give (0, 0))
    (10, 10, (0.7225, 1.0)),     # ... nor at p = 1
    (1, 2, (0.0945, 0.9055)),    # tiny n: very wide
    (0, 0, (0.0, 1.0)),          # no evidence: uninformative
])
def test_wilson_interval_known_values(successes, n, expected):
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_contains_the_rate_at_every_count():
    # In floats the bounds of n of n (and 0 of n) came out a hair inside the rate for some n (100, 300):
    # a negative error bar that failed the report's plot.
    for n in range(1, 501):
        for successes in (0, 1, n - 1, n):
            lo, hi = wilson_interval(successes, n)
            assert 0.0 <= lo <= successes / n <= hi <= 1.0, (successes, n, lo, hi)


@pytest.mark.parametrize("successes, n", [(11, 10), (-1, 10), (1, -1)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


def test_one_report_per_candidate_in_order(reports):
    assert [r.candidate for r in reports] == ["base", "rlvr"]
    assert all(r.model_type == "building" for r in reports)


@pytest.mark.parametrize("field, base, rlvr", [
    ("n", 4, 6),
    ("passed", 1, 4),
    ("pass_rate", 0.25, 4 / 6),
    ("mean_score", 0.375, 5 / 6),
    ("format_violation_rate", 0.25, 0.0),
    ("mean_output_tokens", 150.0, 350 / 6),
    ("mean_latency_s", 1.25, 0.5),
])
def test_candidate_metrics(reports, field, base, rlvr):
    by_name = {r.candidate: r for r in reports}
    assert getattr(by_name["base"], field) == pytest.approx(base)
    assert getattr(by_name["rlvr"], field) == pytest.approx(rlvr)


def test_candidate_interval_is_wilson(reports):
    rlvr = reports[1]
    assert (rlvr.ci_low, rlvr.ci_high) == pytest.approx(wilson_interval(4, 6))
    assert rlvr.ci_low < rlvr.pass_rate < rlvr.ci_high


@pytest.mark.parametrize("candidate, skill, n, passed", [
    ("base", "a", 3, 1),  # t1 failed a, t2 passed, t4 failed a
    ("base", "b", 3, 1),  # t1 passed b, t3 format violation, t4 failed b
    ("rlvr", "a", 5, 5),
    ("rlvr", "b", 4, 2),
    ("base", "c", 0, 0),  # never exercised
    ("rlvr", "c", 0, 0),
])
def test_per_skill_counts(reports, candidate, skill, n, passed):
    st = {r.candidate: r for r in reports}[candidate].per_skill[skill]
    assert (st.n, st.passed) == (n, passed)
    if n:
        assert st.pass_rate == pytest.approx(passed / n)
        assert (st.ci_low, st.ci_high) == pytest.approx(wilson_interval(passed, n))
    else:
        assert st.pass_rate is None and (st.ci_low, st.ci_high) == (0.0, 1.0)


def test_every_skill_present(reports):
    assert all(list(r.per_skill) == SKILLS for r in reports)


@pytest.mark.parametrize("records, message", [
    ([], "no evaluation records"),
    ([rec("base", "t1", "a", True, 1.5)], "score must be in"),
    ([rec("base", "t1", "a", False, -0.1, failed="a")], "score must be in"),
    ([rec("base", "t1", "z", True, 1.0)], "not in all_skills"),
    ([rec("base", "t1", "a", False, 0.0, failed="b")], "not among the task's skills"),
    ([rec("base", "t1", "ab", True, 0.5, failed="a")], "marked passed"),
])
def test_bad_input_is_rejected(records, message):
    with pytest.raises(ValueError, match=message):
        PerformanceTracker().summarize(records, "building", SKILLS)


def test_rows(reports):
    rows = report_rows(reports, report_id="r1", model_type="building", created_at="2025-01-01T00:00:00")
    assert [(r["candidate"], r["report_id"], r["model_type"]) for r in rows] == [
        ("base", "r1", "building"), ("rlvr", "r1", "building")]
    assert rows[1]["pass_rate"] == pytest.approx(4 / 6)

    skill_rows = per_skill_rows(reports, report_id="r1", model_type="building", created_at="2025-01-01")
    assert len(skill_rows) == 2 * len(SKILLS)
    row = next(r for r in skill_rows if r["candidate"] == "rlvr" and r["skill"] == "b")
    assert (row["n"], row["passed"], row["pass_rate"]) == (4, 2, 0.5)

    with pytest.raises(ValueError, match="model type"):
        report_rows(reports, report_id="r1", model_type="tree", created_at="2025-01-01")


def test_markdown_names_candidates_and_skills(reports):
    md = markdown_table(reports)
    for text in ("| base | 4 | 25.0%", "| rlvr | 6 | 66.7%", "| a |", "| b |", "| c |", "5/5"):
        assert text in md


@pytest.mark.parametrize("with_history", [False, True])
def test_plot_writes_png(tmp_path, reports, with_history):
    history = None
    if with_history:
        history = (report_rows(reports, report_id="r1", model_type="building", created_at="2025-01-01")
                   + report_rows(reports, report_id="r2", model_type="building", created_at="2025-01-02"))
    path = plot_pass_rates(reports, history, str(tmp_path / "pass_rates.png"))
    data = (tmp_path / "pass_rates.png").read_bytes()
    assert path == str(tmp_path / "pass_rates.png")
    assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_plot_takes_a_candidate_that_passed_every_task(tmp_path):
    # 100 of 100: the Wilson upper bound must not fall below the rate (matplotlib refuses negative error bars).
    perfect = [rec("rlvr", f"t{i}", "a", True, 1.0) for i in range(100)]
    reports = PerformanceTracker().summarize(perfect, "facial", ["a"])
    assert reports[0].ci_high == 1.0 and reports[0].pass_rate == 1.0
    plot_pass_rates(reports, None, str(tmp_path / "pass_rates.png"))
    assert (tmp_path / "pass_rates.png").read_bytes().startswith(b"\x89PNG")
