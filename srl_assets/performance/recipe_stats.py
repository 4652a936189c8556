"""Paired statistics for a recipe comparison: which training recipe works best (no Dagster here).

Every recipe ("start", "sft", "rlvr", "srl", "srl_rlvr", ...) is evaluated on the SAME held-out
tasks, one ``EvalRecord`` per (recipe, task). Pairing is what makes small differences visible:
two recipes that pass 0.40 and 0.45 of 200 tasks have overlapping Wilson intervals, yet if one
passes 12 tasks the other fails and the reverse happens on 2, the difference is clear. So:

- pass rate: Wilson 95 % interval (``performance_tracker.wilson_interval``, the one the
  performance report uses), per recipe;
- mean score and every difference between recipes: a paired percentile bootstrap over tasks.
  One resample of task indices is drawn per replicate and shared by all recipes, so each
  difference's interval keeps the pairing (Efron & Tibshirani 1993, ch. 13);
- a paired test of each recipe against each other: the exact McNemar test, i.e. a two-sided
  binomial test with p = 1/2 on the discordant pairs (tasks one recipe passes and the other
  fails); concordant tasks carry no information about which recipe is better (McNemar 1947).

"a beats b" means a higher pass rate on the paired tasks (issue 16); the p-value is shown beside
it, not folded into it.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from srl_assets.performance.performance_tracker import EvalRecord, _check_record, wilson_interval

#: z for the 95 % Wilson interval; the bootstrap intervals use the matching 2.5/97.5 percentiles.
Z95 = 1.96
_PERCENTILES = (2.5, 97.5)


@dataclass(frozen=True)
class RecipeComparison:
    """The result of ``compare_recipes``.

    ``summary``: one row per recipe in ``order`` (recipe, n_tasks, passed, pass_rate, pass_lo,
    pass_hi, mean_score, score_lo, score_hi, delta_vs_start, delta_lo, delta_hi, p_vs_start), where
    "start" is ``order[0]``. ``pairwise``: every ORDERED pair (a, b), a != b (so a lookup by
    ``a == x and b == y`` always finds one row; (b, a) mirrors (a, b)). ``skills``: one row per
    skill some task exercises (skill, n_tasks, then one pass-rate column per recipe).
    ``passed`` / ``scores``: task × recipe tables (index task_id, sorted) of the raw outcomes.
    """

    order: tuple[str, ...]
    task_ids: tuple[str, ...]
    summary: pd.DataFrame
    pairwise: pd.DataFrame
    skills: pd.DataFrame
    passed: pd.DataFrame
    scores: pd.DataFrame
    n_boot: int
    seed: int

    @property
    def start(self) -> str:
        return self.order[0]

    def row(self, recipe: str) -> pd.Series:
        """The summary row of ``recipe`` (ValueError naming the known recipes if absent)."""
        if recipe not in self.order:
            raise ValueError(f"recipe '{recipe}' is not in this comparison; recipes: {list(self.order)}")
        return self.summary.set_index("recipe").loc[recipe]


# ----------------------------------------------------------------------------------------------
# Statistics


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 with none).

    >>> mcnemar_exact(0, 6)  # 2 * 0.5**6
    0.03125
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"mcnemar_exact needs counts >= 0, got a_only={a_only}, b_only={b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    # Imported here: scipy.stats costs ~0.7 s, which every Dagster process loading the definitions paid.
    from scipy.stats import binomtest

    return float(min(1.0, binomtest(a_only, n, 0.5, alternative="two-sided").pvalue))


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, _PERCENTILES)
    return float(lo), float(hi)


def compare_recipes(records: Sequence[EvalRecord], order: list[str], n_boot: int = 2000,
                    seed: int = 0) -> RecipeComparison:
    """Paired comparison of the recipes in ``order`` (the first is the reference, "start").

    Records of candidates not in ``order`` are ignored. Raises ValueError when a recipe in
    ``order`` has no records, a task is evaluated twice for one recipe, the recipes were not
    evaluated on the same task set (naming the recipe and the task ids), or one task id carries
    different skills for different recipes (then they are not the same task).
    The bootstrap is seeded by ``seed``: the same records give the same intervals.
    """
    order = list(order)
    if not order:
        raise ValueError("compare_recipes needs at least one recipe in order")
    dupes = sorted({r for r in order if order.count(r) > 1})
    if dupes:
        raise ValueError(f"recipes {dupes} appear more than once in order {order}")
    if n_boot < 1:
        raise ValueError(f"compare_recipes needs n_boot >= 1, got {n_boot}")

    by_recipe = _index_records(records, order)
    task_ids = sorted(by_recipe[order[0]])
    _check_paired(by_recipe, order)

    # [n_tasks, n_recipes] outcome matrices, tasks in sorted id order so record order is irrelevant.
    passed = np.array([[bool(by_recipe[r][t].passed) for r in order] for t in task_ids], dtype=bool)
    scores = np.array([[float(by_recipe[r][t].score) for r in order] for t in task_ids], dtype=float)
    n = len(task_ids)

    # One shared resample of tasks per replicate keeps every recipe (and every difference) paired.
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))                      # [n_boot, n_tasks]
    boot_pass = passed.astype(float)[idx].mean(axis=1)              # [n_boot, n_recipes]
    boot_score = scores[idx].mean(axis=1)                           # [n_boot, n_recipes]

    pairwise = _pairwise(order, passed, scores, boot_pass, boot_score)
    summary = _summary(order, passed, scores, boot_pass, boot_score, pairwise)
    return RecipeComparison(
        order=tuple(order), task_ids=tuple(task_ids), summary=summary, pairwise=pairwise,
        skills=_skills(order, task_ids, by_recipe),
        passed=pd.DataFrame(passed, index=pd.Index(task_ids, name="task_id"), columns=order),
        scores=pd.DataFrame(scores, index=pd.Index(task_ids, name="task_id"), columns=order),
        n_boot=n_boot, seed=seed)


def _index_records(records: Sequence[EvalRecord], order: list[str]) -> dict[str, dict[str, EvalRecord]]:
    """{recipe: {task_id: record}} for the recipes in ``order``, rejecting missing and duplicated ones."""
    wanted = set(order)
    by_recipe: dict[str, dict[str, EvalRecord]] = {r: {} for r in order}
    twice: dict[str, list[str]] = {}
    for i, rec in enumerate(records):
        if rec.candidate not in wanted:
            continue
        # Same checks as the performance report: a score outside [0, 1] or a "passed" record with
        # failed skills would silently distort every statistic below.
        _check_record(i, rec, set(rec.skills))
        if rec.task_id in by_recipe[rec.candidate]:
            twice.setdefault(rec.candidate, []).append(rec.task_id)
        by_recipe[rec.candidate][rec.task_id] = rec
    if twice:
        detail = "; ".join(f"recipe '{r}': {_ids(sorted(set(ts)))}" for r, ts in twice.items())
        raise ValueError(f"tasks evaluated more than once for one recipe ({detail})")
    empty = [r for r in order if not by_recipe[r]]
    if empty:
        present = sorted({rec.candidate for rec in records})
        raise ValueError(f"recipes {empty} in order have no evaluation records; "
                         f"candidates in the records: {present}")
    return by_recipe


def _check_paired(by_recipe: dict[str, dict[str, EvalRecord]], order: list[str]) -> None:
    ref = order[0]
    ref_tasks = set(by_recipe[ref])
    for recipe in order[1:]:
        tasks = set(by_recipe[recipe])
        if tasks != ref_tasks:
            raise ValueError(
                f"recipe '{recipe}' was not evaluated on the same tasks as '{ref}' (unpaired): "
                f"missing task ids {_ids(sorted(ref_tasks - tasks))}, "
                f"extra task ids {_ids(sorted(tasks - ref_tasks))}")
        for t in sorted(tasks):
            a, b = by_recipe[ref][t].skills, by_recipe[recipe][t].skills
            if set(a) != set(b):
                raise ValueError(f"task '{t}' exercises skills {sorted(a)} for recipe '{ref}' but "
                                 f"{sorted(b)} for recipe '{recipe}': not the same task")


def _ids(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(t) for t in ids[:limit])
    more = f", … ({len(ids) - limit} more)" if len(ids) > limit else ""
    return f"[{shown}{more}]"


def _pairwise(order: list[str], passed: np.ndarray, scores: np.ndarray, boot_pass: np.ndarray,
              boot_score: np.ndarray) -> pd.DataFrame:
    n = passed.shape[0]
    rows = []
    for (i, a), (j, b) in itertools.permutations(enumerate(order), 2):
        a_only = int(np.sum(passed[:, i] & ~passed[:, j]))
        b_only = int(np.sum(~passed[:, i] & passed[:, j]))
        d_lo, d_hi = _percentile_ci(boot_pass[:, i] - boot_pass[:, j])
        s_lo, s_hi = _percentile_ci(boot_score[:, i] - boot_score[:, j])
        pass_a, pass_b = float(passed[:, i].mean()), float(passed[:, j].mean())
        rows.append({
            "a": a, "b": b, "n_tasks": n, "pass_a": pass_a, "pass_b": pass_b,
            "a_only": a_only, "b_only": b_only,
            # Exactly (a_only - b_only) / n: the concordant tasks cancel.
            "delta": (a_only - b_only) / n, "delta_lo": d_lo, "delta_hi": d_hi,
            "mcnemar_p": mcnemar_exact(a_only, b_only),
            "score_delta": float(scores[:, i].mean() - scores[:, j].mean()),
            "score_delta_lo": s_lo, "score_delta_hi": s_hi,
        })
    columns = ["a", "b", "n_tasks", "pass_a", "pass_b", "a_only", "b_only", "delta", "delta_lo",
               "delta_hi", "mcnemar_p", "score_delta", "score_delta_lo", "score_delta_hi"]
    return pd.DataFrame(rows, columns=columns)


def _summary(order: list[str], passed: np.ndarray, scores: np.ndarray, boot_pass: np.ndarray,
             boot_score: np.ndarray, pairwise: pd.DataFrame) -> pd.DataFrame:
    n = passed.shape[0]
    start = order[0]
    vs_start = pairwise[pairwise["b"] == start].set_index("a")
    rows = []
    for i, recipe in enumerate(order):
        k = int(passed[:, i].sum())
        lo, hi = wilson_interval(k, n, Z95)
        s_lo, s_hi = _percentile_ci(boot_score[:, i])
        if recipe == start:
            # The reference against itself: no discordant pair, so delta 0 and p 1 by definition.
            delta, d_lo, d_hi, p = 0.0, 0.0, 0.0, 1.0
        else:
            r = vs_start.loc[recipe]
            delta, d_lo, d_hi, p = (float(r["delta"]), float(r["delta_lo"]), float(r["delta_hi"]),
                                    float(r["mcnemar_p"]))
        rows.append({
            "recipe": recipe, "n_tasks": n, "passed": k, "pass_rate": k / n, "pass_lo": lo,
            "pass_hi": hi, "mean_score": float(scores[:, i].mean()), "score_lo": s_lo,
            "score_hi": s_hi, "delta_vs_start": delta, "delta_lo": d_lo, "delta_hi": d_hi,
            "p_vs_start": p,
        })
    return pd.DataFrame(rows)


def _skills(order: list[str], task_ids: list[str],
            by_recipe: dict[str, dict[str, EvalRecord]]) -> pd.DataFrame:
    """Per-skill pass rate per recipe; the tasks (and so their skills) are the same for every recipe."""
    ref = by_recipe[order[0]]
    skills = sorted({s for t in task_ids for s in ref[t].skills})
    rows = []
    for skill in skills:
        exercising = [t for t in task_ids if skill in ref[t].skills]
        row: dict[str, object] = {"skill": skill, "n_tasks": len(exercising)}
        for recipe in order:
            # skill_passed: a format violation passes no skill (see EvalRecord.skill_passed).
            row[recipe] = sum(by_recipe[recipe][t].skill_passed(skill) for t in exercising) / len(exercising)
        rows.append(row)
    return pd.DataFrame(rows, columns=["skill", "n_tasks", *order])


def beats(comparison: RecipeComparison, a: str, b: str) -> bool:
    """Whether recipe ``a`` has a higher pass rate than ``b`` on the paired tasks (a tie is False).

    Compared as pass counts (the task set is shared), so equal rates never differ by rounding.
    """
    return int(comparison.row(a)["passed"]) > int(comparison.row(b)["passed"])


# ----------------------------------------------------------------------------------------------
# Markdown and plot


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(comparison: RecipeComparison, include_skills: bool = False) -> str:
    """The summary as a Markdown table (pass rate with its Wilson CI, mean score with its paired
    bootstrap CI, the pass-rate difference against the first recipe and its exact McNemar p).

    ``include_skills`` appends a skill × recipe pass-rate table.
    """
    start = comparison.start
    lines = [f"| recipe | pass rate [95% CI] | mean score [95% CI] | Δ vs {start} | McNemar p |",
             "|---|---|---|---:|---:|"]
    for r in comparison.summary.itertuples(index=False):
        if r.recipe == start:
            delta, p = "—", "—"
        else:
            delta, p = f"{r.delta_vs_start:+.3f}", _fmt_p(r.p_vs_start)
        lines.append(f"| {r.recipe} | {r.pass_rate:.3f} [{r.pass_lo:.3f}, {r.pass_hi:.3f}] "
                     f"| {r.mean_score:.3f} [{r.score_lo:.3f}, {r.score_hi:.3f}] | {delta} | {p} |")
    if include_skills and not comparison.skills.empty:
        order = list(comparison.order)
        lines += ["", "| skill | tasks | " + " | ".join(order) + " |",
                  "|---|---:|" + "---:|" * len(order)]
        for _, row in comparison.skills.iterrows():
            cells = " | ".join(f"{row[r]:.3f}" for r in order)
            lines.append(f"| {row['skill']} | {int(row['n_tasks'])} | {cells} |")
    return "\n".join(lines)


def comparison_plot(comparison: RecipeComparison, path: str | Path, title: str) -> Path:
    """Write a PNG to ``path`` (atomically) and return it.

    Left: pass rate per recipe with its 95 % Wilson interval, labelled with the exact McNemar p
    against the first recipe; right: mean score per recipe with its 95 % paired-bootstrap
    interval. A dashed line marks the first recipe's value in each panel.
    """
    # The object-oriented API on an Agg canvas touches no global pyplot state or backend (safe in a
    # long-running Dagster process), as in performance_tracker.plot_pass_rates.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = comparison.summary
    names = list(s["recipe"])
    x = np.arange(len(names))
    fig = Figure(figsize=(max(8.0, 1.6 * len(names) + 3), 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    panels = [
        (left, "pass_rate", "pass_lo", "pass_hi", "tab:blue", "verifier pass rate",
         "pass rate (95% Wilson CI)\np: exact McNemar vs {start}; dashed: {start}"),
        (right, "mean_score", "score_lo", "score_hi", "tab:orange", "mean verifier score",
         "mean score (95% paired bootstrap CI)\ndashed: {start}"),
    ]
    for ax, col, lo, hi, color, ylabel, subtitle in panels:
        vals = s[col].to_numpy()
        err = np.vstack([vals - s[lo].to_numpy(), s[hi].to_numpy() - vals]).clip(min=0)
        ax.bar(x, vals, yerr=err, capsize=6, color=color, alpha=0.8)
        ax.axhline(vals[0], color="grey", linestyle="--", linewidth=1)
        for k, (xi, v, top) in enumerate(zip(x, vals, s[hi].to_numpy())):
            label = f"{v:.3f}"
            if col == "pass_rate" and k > 0:
                # The paired test against the start sits beside the rate it qualifies.
                label += f"\np={_fmt_p(float(s['p_vs_start'].iloc[k]))}"
            ax.text(xi, top + 0.02, label, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1.18)  # room for the labels above an interval that reaches 1
        ax.set_ylabel(ylabel)
        ax.set_title(subtitle.format(start=names[0]), fontsize=10)
    fig.suptitle(f"{title} — {len(comparison.task_ids)} paired held-out tasks")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then rename: a reader never sees a half-written PNG.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
