"""Pick, for each responsibility (model type, skill), the candidate with the best quality for cost.

Candidates are local checkpoints ("base", "srl", "rlvr") and, later, paid fine-tuned models. Each
has evaluation evidence for the skill (``passed`` of ``n`` held-out tasks) and a running cost.
The selector ranks them by a linear utility:

    utility = w_quality · wilson_lower(passed, n) − w_cost · total_cost_per_1k − w_latency · latency_s

Quality is the lower bound of the 95 % Wilson interval rather than the raw pass rate, so a
candidate that passed 3/3 tasks (lower bound 0.44) does not beat one that passed 90/100 (0.83):
the bound is pessimistic in proportion to how little evidence there is. Candidates with no
evidence (n = 0) are skipped. Ties go to the cheaper candidate, then to the name (deterministic).
No Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from srl_assets.performance.performance_tracker import wilson_interval

KINDS = ("local", "paid")


class PassCounts(Protocol):
    """Anything with pass counts: ``SkillStat`` or ``CandidateReport`` of the performance tracker."""

    n: int
    passed: int


# Load assumed when a candidate's hosting (a dedicated endpoint, provisioned throughput) is
# spread over tokens: its hourly price is divided by this many output tokens per hour.
DEFAULT_OUTPUT_TOKENS_PER_HOUR = 100_000.0


@dataclass(frozen=True)
class Candidate:
    """A model that can take a responsibility; latency in seconds per task.

    Cost, in currency units per 1,000 output tokens, is ``cost_per_1k_tokens`` (a flat all-in
    price, 0 for a local checkpoint whose compute is not priced) plus, for a hosted model, its
    real prices: ``output_per_1k`` + ``input_per_1k`` × (input tokens per output token, from the
    evaluation) + ``hosting_per_hour`` spread over ``output_tokens_per_hour``. See ``total_cost_per_1k``.
    """

    name: str
    kind: str
    cost_per_1k_tokens: float = 0.0
    mean_latency_s: float = 0.0
    input_per_1k: float = 0.0
    output_per_1k: float = 0.0
    hosting_per_hour: float = 0.0
    mean_input_tokens: float = 0.0
    mean_output_tokens: float = 0.0
    output_tokens_per_hour: float = DEFAULT_OUTPUT_TOKENS_PER_HOUR

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"candidate '{self.name}': kind must be one of {KINDS}, got '{self.kind}'")
        if self.cost_per_1k_tokens < 0 or self.mean_latency_s < 0:
            raise ValueError(f"candidate '{self.name}': cost and latency must be >= 0")
        if min(self.input_per_1k, self.output_per_1k, self.hosting_per_hour, self.mean_input_tokens,
               self.mean_output_tokens) < 0 or self.output_tokens_per_hour <= 0:
            raise ValueError(f"candidate '{self.name}': prices and token counts must be >= 0 "
                             f"and output_tokens_per_hour > 0")

    @property
    def total_cost_per_1k(self) -> float:
        """Everything one thousand output tokens cost, in the units of the prices."""
        ratio = self.mean_input_tokens / self.mean_output_tokens if self.mean_output_tokens else 0.0
        hosting = self.hosting_per_hour * 1000.0 / self.output_tokens_per_hour
        return self.cost_per_1k_tokens + self.output_per_1k + self.input_per_1k * ratio + hosting


@dataclass(frozen=True)
class SelectionWeights:
    """Weights of the utility. quality multiplies a [0, 1] lower bound; cost is per unit of
    cost_per_1k_tokens; latency per second. All >= 0, and quality > 0 (a selector that ignores
    quality would simply pick the cheapest model)."""

    quality: float = 1.0
    cost: float = 0.1
    latency: float = 0.05

    def __post_init__(self) -> None:
        if self.quality <= 0:
            raise ValueError(f"SelectionWeights.quality must be > 0, got {self.quality}")
        if self.cost < 0 or self.latency < 0:
            raise ValueError(f"SelectionWeights.cost and .latency must be >= 0, "
                             f"got cost={self.cost}, latency={self.latency}")


@dataclass(frozen=True)
class Selection:
    """The chosen candidate for one (model type, skill), with the runner-up for comparison.
    ``runner_up``, ``runner_up_score`` and ``margin`` are None when only one candidate had evidence."""

    model_type: str
    skill: str
    chosen: str
    score: float
    runner_up: str | None
    runner_up_score: float | None
    margin: float | None
    explanation: str


@dataclass(frozen=True)
class DynamicModelSelector:
    """Ranks candidates by the utility of the module docstring."""

    weights: SelectionWeights = SelectionWeights()

    def utility(self, stat: PassCounts, cand: Candidate) -> float:
        """w_quality · Wilson lower bound − w_cost · cost per 1k tokens − w_latency · latency."""
        lower, _ = wilson_interval(stat.passed, stat.n)
        w = self.weights
        return w.quality * lower - w.cost * cand.total_cost_per_1k - w.latency * cand.mean_latency_s

    def select(self, model_type: str, skill_stats: dict[str, PassCounts],
               candidates: dict[str, Candidate], skill: str = "overall") -> Selection:
        """Choose among the candidates of ``skill_stats`` (candidate name → pass counts) for one
        skill (``"overall"`` when the stats are whole-model pass counts)."""
        missing = sorted(set(skill_stats) - set(candidates))
        if missing:
            raise ValueError(f"no Candidate (cost, latency) given for {missing}")
        ranked = sorted(
            ((round(self.utility(st, candidates[name]), 12), name)
             for name, st in skill_stats.items() if st.n > 0),
            key=lambda t: (-t[0], candidates[t[1]].total_cost_per_1k, t[1]),
        )
        if not ranked:
            raise ValueError(f"{model_type}/{skill}: no candidate has evaluated tasks (all n = 0)")
        score, chosen = ranked[0]
        runner_score, runner_up = ranked[1] if len(ranked) > 1 else (None, None)
        margin = None if runner_score is None else round(score - runner_score, 12)
        return Selection(
            model_type=model_type, skill=skill, chosen=chosen, score=score,
            runner_up=runner_up, runner_up_score=runner_score, margin=margin,
            explanation=self._explain(chosen, skill_stats[chosen], candidates[chosen], score,
                                      runner_up, runner_score, margin),
        )

    def select_all(self, model_type: str, per_skill: dict[str, dict[str, PassCounts]],
                   candidates: dict[str, Candidate]) -> list[Selection]:
        """``select`` for every skill (skill → candidate → pass counts), in skill order.
        Skills that no candidate was evaluated on (all n = 0) are left out: nothing to choose by."""
        return [self.select(model_type, stats, candidates, skill=skill)
                for skill, stats in sorted(per_skill.items())
                if any(st.n > 0 for st in stats.values())]

    def _explain(self, name: str, stat: PassCounts, cand: Candidate, score: float,
                 runner_up: str | None, runner_score: float | None, margin: float | None) -> str:
        lower, _ = wilson_interval(stat.passed, stat.n)
        w = self.weights
        text = (f"{cand.kind} '{name}': utility {score:.3f} = {w.quality:g}×{lower:.3f} "
                f"(Wilson lower bound of {stat.passed}/{stat.n}) − {w.cost:g}×{cand.total_cost_per_1k:.4g} "
                f"(cost/1k tokens) − {w.latency:g}×{cand.mean_latency_s:g} s")
        if runner_up is None:
            return text + "; the only candidate with evaluated tasks"
        return text + f"; beats '{runner_up}' ({runner_score:.3f}) by {margin:.3f}"


def markdown_table(selections: Sequence[Selection]) -> str:
    """One row per responsibility: choice, runner-up, margin and the utility breakdown."""
    lines = ["| model type | skill | chosen | utility | runner-up | runner-up utility | margin | why |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for s in selections:
        ru = s.runner_up or "–"
        rus = "–" if s.runner_up_score is None else f"{s.runner_up_score:.3f}"
        mg = "–" if s.margin is None else f"{s.margin:.3f}"
        lines.append(f"| {s.model_type} | {s.skill} | {s.chosen} | {s.score:.3f} | {ru} | {rus} "
                     f"| {mg} | {s.explanation} |")
    return "\n".join(lines)
