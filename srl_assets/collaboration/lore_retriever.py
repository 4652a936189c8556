"""LoreRetriever: ranks a model type's lore passages for a task with BM25 (rank-bm25, offline).

The index is built once per rules version from the packaged lore; the query is the task text plus
every value of its parameters, so a task about ``cactaceae`` in the ``desert`` retrieves the
passages that name them even when the prose says "cacti".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from rank_bm25 import BM25Okapi

from srl_assets.domains.base import Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.prompts import task_prompt

TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


@dataclass(frozen=True)
class RetrievedPassage:
    rule_id: str
    title: str
    text: str
    score: float


class LoreRetriever:
    def __init__(self, rules: Rules, k: int = 3):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.rules = rules
        self.k = k
        # Index the rule id and title too: ids like plant.family.cactaceae carry the key terms.
        docs = [tokenize(f"{p.rule_id.replace('.', ' ')} {p.title} {p.text}") for p in rules.lore]
        self._bm25 = BM25Okapi(docs)

    def query_text(self, task: Task) -> str:
        # String parameter values only: keys and numbers would match every passage equally.
        values = " ".join(v.replace("_", " ") for v in _flatten(task.params) if isinstance(v, str))
        return f"{task.prompt} {values}"

    def retrieve(self, task: Task, k: int | None = None) -> list[RetrievedPassage]:
        """Top-k passages by BM25 score, best first; ties keep the lore file's order."""
        scores = self._bm25.get_scores(tokenize(self.query_text(task)))
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: k or self.k]
        return [RetrievedPassage(self.rules.lore[i].rule_id, self.rules.lore[i].title,
                                 self.rules.lore[i].text, round(float(scores[i]), 4)) for i in order]


def _flatten(value) -> list:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def lore_block(passages: list[RetrievedPassage]) -> str:
    """How retrieved lore appears in prompts: one line per passage with its rule id."""
    return "\n".join(f"[{p.rule_id}] {p.text}" for p in passages)


def policy_prompts(tasks: list[Task], rules: Rules, lore_k: int) -> list[str]:
    """The prompts the policy sees: each task with its ``lore_k`` best lore passages (none when 0)."""
    retriever = LoreRetriever(rules, k=lore_k) if lore_k else None
    return [task_prompt(t.prompt, lore_block(retriever.retrieve(t)) if retriever else "") for t in tasks]


def passages_json(passages: list[RetrievedPassage]) -> str:
    return json.dumps([{"rule_id": p.rule_id, "score": p.score} for p in passages])
