"""Turn per-task verdicts of evaluated checkpoints into a performance report (no Dagster here).

Each evaluation of one held-out task by one candidate ("base", "srl", "rlvr", later paid models)
yields an ``EvalRecord``. ``PerformanceTracker.summarize`` aggregates them into one
``CandidateReport`` per candidate: verifier pass rate, mean score, per-skill pass rates,
format-violation rate, mean output length and latency.

Why Wilson intervals: a held-out set is small (tens of tasks per skill), so a pass rate is a noisy
estimate of the true rate. The normal ("Wald") interval p ± z·sqrt(p(1-p)/n) collapses to zero width
at p = 0 or 1 and can leave [0, 1]; the Wilson score interval inverts the score test instead, stays
inside [0, 1] and keeps close to its nominal coverage for small n (Brown, Cai & DasGupta 2001,
"Interval Estimation for a Binomial Proportion"). Its lower bound is also what
``srl_assets.selection`` ranks candidates by: a pessimistic estimate that rewards evidence.

The helpers below flatten reports into table rows (history tables), render a Markdown table and
plot pass rates for the materialization metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

# ----------------------------------------------------------------------------------------------
# Records and statistics


@dataclass(frozen=True)
class EvalRecord:
    """The verdict of one candidate on one held-out task.

    ``skills`` are the skills (constraint names) the task exercises; ``failed_skills`` those the
    verifier rejected (a subset of ``skills``). ``score`` is the verifier score in [0, 1];
    ``format_ok`` is False when the output could not be parsed into a spec at all.
    """

    candidate: str
    task_id: str
    skills: tuple[str, ...]
    passed: bool
    score: float
    failed_skills: tuple[str, ...]
    format_ok: bool
    output_tokens: int
    latency_s: float
    #: the generated text (kept so a report can show what the model wrote, e.g. as previews).
    output: str = field(default="", compare=False, repr=False)

    def skill_passed(self, skill: str) -> bool:
        """Whether this record counts as a pass for ``skill``.

        A skill passes when the task exercises it and the verifier did not name it as failed.
        An output with a format violation passes no skill: the verifier only checks the
        constraints of a parsed spec, so an unparseable output has no failures named and would
        otherwise count as passing every skill.
        """
        return skill in self.skills and skill not in self.failed_skills and self.format_ok


@dataclass(frozen=True)
class SkillStat:
    """Pass counts of one skill for one candidate. ``pass_rate`` is None when ``n`` is 0
    (no evaluated task exercised the skill); the interval is then the uninformative (0, 1)."""

    n: int
    passed: int
    pass_rate: float | None
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class CandidateReport:
    """The summary of one candidate's evaluation on one model type."""

    candidate: str
    model_type: str
    n: int
    passed: int
    pass_rate: float
    ci_low: float
    ci_high: float
    mean_score: float
    per_skill: dict[str, SkillStat] = field(hash=False)
    format_violation_rate: float
    mean_output_tokens: float
    mean_latency_s: float


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (z = 1.96 gives 95 %).

    With p̂ = successes / n:
        centre    = (p̂ + z²/2n) / (1 + z²/n)
        halfwidth = z · sqrt(p̂(1 − p̂)/n + z²/4n²) / (1 + z²/n)
    n = 0 carries no information and gives (0.0, 1.0).

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if z <= 0:
        raise ValueError(f"wilson_interval needs z > 0, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp only rounding noise: mathematically the interval lies inside [0, 1] and contains p. In floats it may
    # not: at 100 of 100 centre + half is 0.9999999999999999, and an error bar of p - high < 0 is refused by
    # matplotlib (a demo's report failed on a candidate that passed every held-out task).
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def skill_stat(passed: int, n: int, z: float = 1.96) -> SkillStat:
    """A ``SkillStat`` from counts (pass rate None and interval (0, 1) when n = 0)."""
    lo, hi = wilson_interval(passed, n, z)
    return SkillStat(n=n, passed=passed, pass_rate=passed / n if n else None, ci_low=lo, ci_high=hi)


# ----------------------------------------------------------------------------------------------
# Aggregation


@dataclass(frozen=True)
class PerformanceTracker:
    """Summarizes evaluation records; ``z`` sets the confidence of every interval (1.96 → 95 %)."""

    z: float = 1.96

    def __post_init__(self) -> None:
        if self.z <= 0:
            raise ValueError(f"PerformanceTracker.z must be > 0, got {self.z}")

    def summarize(self, records: Sequence[EvalRecord], model_type: str,
                  all_skills: list[str]) -> list[CandidateReport]:
        """One ``CandidateReport`` per candidate, in order of first appearance in ``records``.

        ``per_skill`` holds every skill of ``all_skills`` (the model type's full skill list), so
        a skill that no evaluated task exercised shows up with n = 0 instead of going missing.
        """
        if not records:
            raise ValueError(f"no evaluation records to summarize for model type '{model_type}'")
        known = set(all_skills)
        for i, r in enumerate(records):
            _check_record(i, r, known)

        by_candidate: dict[str, list[EvalRecord]] = {}
        for r in records:
            by_candidate.setdefault(r.candidate, []).append(r)
        return [self._summarize_candidate(name, rs, model_type, all_skills)
                for name, rs in by_candidate.items()]

    def _summarize_candidate(self, candidate: str, rs: list[EvalRecord], model_type: str,
                             all_skills: list[str]) -> CandidateReport:
        n = len(rs)
        passed = sum(r.passed for r in rs)
        lo, hi = wilson_interval(passed, n, self.z)
        per_skill = {}
        for skill in all_skills:
            exercised = [r for r in rs if skill in r.skills]
            per_skill[skill] = skill_stat(sum(r.skill_passed(skill) for r in exercised),
                                          len(exercised), self.z)
        return CandidateReport(
            candidate=candidate,
            model_type=model_type,
            n=n,
            passed=passed,
            pass_rate=passed / n,
            ci_low=lo,
            ci_high=hi,
            mean_score=sum(r.score for r in rs) / n,
            per_skill=per_skill,
            format_violation_rate=sum(not r.format_ok for r in rs) / n,
            mean_output_tokens=sum(r.output_tokens for r in rs) / n,
            mean_latency_s=sum(r.latency_s for r in rs) / n,
        )


def _check_record(i: int, r: EvalRecord, known_skills: set[str]) -> None:
    """Reject records that would silently distort the statistics."""
    where = f"record {i} (candidate '{r.candidate}', task '{r.task_id}')"
    if not (isinstance(r.score, (int, float)) and 0.0 <= r.score <= 1.0):
        raise ValueError(f"{where}: score must be in [0, 1], got {r.score!r}")
    unknown = set(r.skills) - known_skills
    if unknown:
        raise ValueError(f"{where}: skills {sorted(unknown)} are not in all_skills")
    stray = set(r.failed_skills) - set(r.skills)
    if stray:
        raise ValueError(f"{where}: failed_skills {sorted(stray)} are not among the task's skills")
    if r.passed and (r.failed_skills or not r.format_ok):
        raise ValueError(f"{where}: marked passed but has failed skills or a format violation")
    if r.output_tokens < 0 or r.latency_s < 0:
        raise ValueError(f"{where}: output_tokens and latency_s must be >= 0")


# ----------------------------------------------------------------------------------------------
# Table rows


def report_rows(reports: Iterable[CandidateReport], *, report_id: str, model_type: str,
                created_at: datetime | str) -> list[dict[str, Any]]:
    """Flat rows for the report history table, one per candidate."""
    rows = []
    for rep in reports:
        _check_model_type(rep, model_type)
        rows.append({
            "report_id": report_id, "model_type": model_type, "created_at": created_at,
            "candidate": rep.candidate, "n": rep.n, "passed": rep.passed,
            "pass_rate": rep.pass_rate, "ci_low": rep.ci_low, "ci_high": rep.ci_high,
            "mean_score": rep.mean_score, "format_violation_rate": rep.format_violation_rate,
            "mean_output_tokens": rep.mean_output_tokens, "mean_latency_s": rep.mean_latency_s,
        })
    return rows


def per_skill_rows(reports: Iterable[CandidateReport], *, report_id: str, model_type: str,
                   created_at: datetime | str) -> list[dict[str, Any]]:
    """Flat rows, one per candidate × skill (``pass_rate`` None where n = 0)."""
    rows = []
    for rep in reports:
        _check_model_type(rep, model_type)
        for skill, st in rep.per_skill.items():
            rows.append({
                "report_id": report_id, "model_type": model_type, "created_at": created_at,
                "candidate": rep.candidate, "skill": skill, "n": st.n, "passed": st.passed,
                "pass_rate": st.pass_rate, "ci_low": st.ci_low, "ci_high": st.ci_high,
            })
    return rows


def _check_model_type(rep: CandidateReport, model_type: str) -> None:
    if rep.model_type != model_type:
        raise ValueError(f"report of candidate '{rep.candidate}' is for model type "
                         f"'{rep.model_type}', not '{model_type}'")


# ----------------------------------------------------------------------------------------------
# Markdown and plot


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def markdown_table(reports: Sequence[CandidateReport]) -> str:
    """A Markdown summary: one row per candidate, then a skill × candidate pass-rate table."""
    lines = [
        "| candidate | n | pass rate (95% CI) | mean score | format violations | mean tokens | mean latency (s) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(
            f"| {r.candidate} | {r.n} | {_pct(r.pass_rate)} ({_pct(r.ci_low)}–{_pct(r.ci_high)}) "
            f"| {r.mean_score:.3f} | {_pct(r.format_violation_rate)} | {r.mean_output_tokens:.1f} "
            f"| {r.mean_latency_s:.2f} |")
    skills: list[str] = []
    for r in reports:
        skills += [s for s in r.per_skill if s not in skills]
    if skills:
        lines += ["", "| skill | " + " | ".join(r.candidate for r in reports) + " |",
                  "|---|" + "---:|" * len(reports)]
        for s in skills:
            cells = []
            for r in reports:
                st = r.per_skill.get(s)
                cells.append("–" if st is None or st.n == 0
                             else f"{_pct(st.pass_rate)} ({st.passed}/{st.n})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_pass_rates(reports: Sequence[CandidateReport], history_rows: list[dict] | None,
                    path: str) -> str:
    """Write a PNG to ``path`` and return the path.

    Left: pass rate per candidate with its Wilson interval as an error bar. Right: pass rate over
    the report history, one line per candidate (rows with report_id, created_at, candidate,
    pass_rate, e.g. ``report_rows`` output; include the current report's rows to see it there).
    """
    # The object-oriented API with an Agg canvas touches no global pyplot state or backend,
    # so it is safe inside a long-running Dagster process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)

    names = [r.candidate for r in reports]
    rates = [r.pass_rate for r in reports]
    errs = [[r.pass_rate - r.ci_low for r in reports], [r.ci_high - r.pass_rate for r in reports]]
    left.bar(names, rates, yerr=errs, capsize=6, color="tab:blue", alpha=0.8)
    left.set_ylim(0, 1.05)
    left.set_ylabel("verifier pass rate")
    left.set_title("pass rate by candidate (95% Wilson CI)")

    if history_rows:
        # Order reports by creation time; every candidate is plotted against the same x positions.
        order: dict[str, str] = {}
        for row in history_rows:
            order.setdefault(row["report_id"], str(row["created_at"]))
        report_ids = sorted(order, key=lambda rid: (order[rid], rid))
        x_of = {rid: i for i, rid in enumerate(report_ids)}
        candidates = list(dict.fromkeys(row["candidate"] for row in history_rows))
        for cand in candidates:
            pts = sorted((x_of[row["report_id"]], row["pass_rate"])
                         for row in history_rows if row["candidate"] == cand)
            right.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=cand)
        right.set_xticks(range(len(report_ids)), [str(rid)[:10] for rid in report_ids],
                         rotation=30, ha="right")
        right.legend()
    else:
        right.text(0.5, 0.5, "no report history yet", ha="center", va="center",
                   transform=right.transAxes)
    right.set_ylim(0, 1.05)
    right.set_title("pass rate over reports")
    right.set_xlabel("report")

    fig.savefig(path, format="png", dpi=100)
    return path
