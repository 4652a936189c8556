"""Which candidate serves a task: the selection, pins, a sticky adoption rule, rollback and the audit log.

The selection (DuckDB ``model_selection`` + ``performance_skills`` of its report) is read from the
pipeline's file and kept in memory between reads; pins, the adopted routes and the audit log live in
their own SQLite file (``serving.db`` under the Dagster home), so they survive restarts and never
need the pipeline's DuckDB write lock.

Adoption rule: per skill, a new report's choice replaces the served one unless it is worse beyond the
95 % interval on that skill (its Wilson upper bound is below the served candidate's lower bound, both
from the new report). The state before each change is kept, so one call rolls back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from srl_assets.serving.errors import NotFound, ServiceUnavailable
from srl_assets.serving.tables import TableMissing, TableReader

SYSTEM = "system"  # who made an automatic change (a new selection adopted or rejected)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# ----------------------------------------------------------------------------------------------
# What the pipeline wrote (read-only)


@dataclass(frozen=True)
class SkillEvidence:
    n: int
    passed: int
    pass_rate: float | None
    ci_low: float
    ci_high: float


@dataclass
class SelectionView:
    """One model type's latest selection and the evidence of its report."""

    model_type: str
    report_id: str | None
    selection: dict[str, dict[str, Any]]  # skill -> model_selection row
    evidence: dict[tuple[str, str], SkillEvidence]  # (candidate, skill) -> pass counts
    candidates: dict[str, dict[str, Any]]  # candidate -> performance_history row of the report
    paid: dict[str, dict[str, Any]] = field(default_factory=dict)  # paid_candidates rows by name
    fetched_at: float = field(default_factory=time.monotonic)


def read_view(reader: TableReader, model_type: str) -> SelectionView:
    try:
        selection_rows = reader.rows("model_selection", "SELECT * FROM model_selection WHERE model_type = ?",
                                     [model_type])
    except TableMissing:
        selection_rows = []
    report_id = selection_rows[0]["report_id"] if selection_rows else None
    evidence: dict[tuple[str, str], SkillEvidence] = {}
    candidates: dict[str, dict[str, Any]] = {}
    if report_id is not None:
        for r in _optional(reader, "performance_skills",
                           "SELECT * FROM performance_skills WHERE model_type = ? AND report_id = ?",
                           [model_type, report_id]):
            evidence[(r["candidate"], r["skill"])] = SkillEvidence(
                int(r["n"]), int(r["passed"]), _float_or_none(r["pass_rate"]), float(r["ci_low"]),
                float(r["ci_high"]))
        for r in _optional(reader, "performance_history",
                           "SELECT * FROM performance_history WHERE model_type = ? AND report_id = ?",
                           [model_type, report_id]):
            candidates[r["candidate"]] = r
    paid = {r["candidate"]: r for r in _optional(reader, "paid_candidates",
                                                  "SELECT * FROM paid_candidates WHERE model_type = ?", [model_type])}
    return SelectionView(model_type, report_id, {r["skill"]: r for r in selection_rows}, evidence, candidates, paid)


def _optional(reader: TableReader, table: str, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        return reader.rows(table, sql, params)
    except TableMissing:
        return []


def _float_or_none(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


# ----------------------------------------------------------------------------------------------
# What the service decided (its own SQLite file)


@dataclass
class Serving:
    """What serves a model type: a pin, or per-skill routes adopted from a selection report."""

    pin: str | None = None
    routes: dict[str, str] = field(default_factory=dict)
    report_id: str | None = None

    def to_json(self) -> str:
        return json.dumps({"pin": self.pin, "routes": self.routes, "report_id": self.report_id}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> "Serving | None":
        if not raw:
            return None
        d = json.loads(raw)
        return cls(pin=d.get("pin"), routes=dict(d.get("routes") or {}), report_id=d.get("report_id"))


@dataclass
class RoutingState:
    current: Serving = field(default_factory=Serving)
    previous: Serving | None = None
    considered_report_id: str | None = None  # the newest report already adopted or rejected


class ServingStore:
    """pins/routes (``routing_state``) and the ``audit`` log in SQLite; each write is one transaction."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript("""
            CREATE TABLE IF NOT EXISTS routing_state (
                model_type TEXT PRIMARY KEY, current TEXT NOT NULL, previous TEXT,
                considered_report_id TEXT, updated_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, model_type TEXT NOT NULL,
                action TEXT NOT NULL, candidate TEXT, previous_candidate TEXT, key_id TEXT NOT NULL,
                reason TEXT NOT NULL);
        """)

    def load(self) -> dict[str, RoutingState]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT model_type, current, previous, considered_report_id FROM routing_state").fetchall()
        return {mt: RoutingState(Serving.from_json(cur) or Serving(), Serving.from_json(prev), considered)
                for mt, cur, prev, considered in rows}

    def save(self, model_type: str, state: RoutingState, audit: dict[str, Any] | None) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO routing_state VALUES (?, ?, ?, ?, ?) ON CONFLICT(model_type) DO UPDATE SET "
                    "current = excluded.current, previous = excluded.previous, "
                    "considered_report_id = excluded.considered_report_id, updated_at = excluded.updated_at",
                    [model_type, state.current.to_json(), state.previous.to_json() if state.previous else None,
                     state.considered_report_id, _now()])
                if audit is not None:
                    self._conn.execute(
                        "INSERT INTO audit (at, model_type, action, candidate, previous_candidate, key_id, reason) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [_now(), model_type, audit["action"], audit.get("candidate"), audit.get("previous"),
                         audit["key_id"], audit["reason"]])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def audit(self, model_type: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._conn.execute(
                "SELECT id, at, model_type, action, candidate, previous_candidate, key_id, reason FROM audit "
                "WHERE model_type = ? ORDER BY id DESC LIMIT ?", [model_type, limit])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ----------------------------------------------------------------------------------------------
# The router


def _describe(s: Serving) -> str:
    if s.pin:
        return f"pin:{s.pin}"
    counts = Counter(s.routes.values())
    return ",".join(f"{c}" for c, _ in counts.most_common()) or "(none)"


class Router:
    def __init__(self, reader: TableReader, store: ServingStore, ttl_s: float):
        self.reader = reader
        self.store = store
        self.ttl_s = ttl_s
        self._views: dict[str, SelectionView] = {}
        self._states = store.load()
        self._lock = threading.RLock()
        self._refreshing: set[str] = set()

    # -- reads ------------------------------------------------------------------------------
    def view(self, model_type: str, fresh: bool = False) -> SelectionView:
        """The in-memory view, re-read when stale. A locked DuckDB file keeps the old view (if any)."""
        with self._lock:
            old = self._views.get(model_type)
            if old is not None and not fresh and time.monotonic() - old.fetched_at < self.ttl_s:
                return old
            if old is not None and model_type in self._refreshing:
                return old  # one request re-reads; the others route by what is in memory meanwhile
            self._refreshing.add(model_type)
        try:
            view = read_view(self.reader, model_type)
        except ServiceUnavailable:
            if old is not None:
                return old
            raise
        finally:
            with self._lock:
                self._refreshing.discard(model_type)
        with self._lock:
            self._views[model_type] = view
            self._consider(model_type, view)
        return view

    def state(self, model_type: str) -> RoutingState:
        with self._lock:
            return self._states.setdefault(model_type, RoutingState())

    def cached_view(self, model_type: str) -> SelectionView | None:
        """The in-memory view when it needs no read (fresh, or another request is re-reading it), else
        None: the event loop routes with it directly and leaves reads to a worker thread."""
        with self._lock:
            old = self._views.get(model_type)
            if old is not None and (time.monotonic() - old.fetched_at < self.ttl_s or model_type in self._refreshing):
                return old
        return None

    def candidate_for(self, model_type: str, skills: tuple[str, ...],
                      view: SelectionView | None = None) -> tuple[str, str]:
        """(candidate, why) for a task exercising ``skills`` (``view``: the one to route by, else read)."""
        view = view or self.view(model_type)
        state = self.state(model_type)
        if state.current.pin:
            return state.current.pin, "pinned"
        routes = state.current.routes
        if not routes:
            raise ServiceUnavailable(
                f"no candidate is selected for {model_type!r} yet: materialize model_selection for it "
                f"or pin a candidate (PUT /v1/models/{model_type}/pin)")
        chosen = [routes[s] for s in skills if s in routes] or list(routes.values())
        counts = Counter(chosen)
        score = {c: sum(float(view.selection.get(s, {}).get("score") or 0.0) for s in skills if routes.get(s) == c)
                 for c in counts}
        best = sorted(counts, key=lambda c: (-counts[c], -score[c], c))[0]
        return best, f"selected for {counts[best]} of the task's {len(skills)} skills (report {state.current.report_id})"

    def known_candidates(self, model_type: str, extra: set[str]) -> set[str]:
        view = self.view(model_type)
        return set(view.candidates) | {r["chosen"] for r in view.selection.values()} | set(view.paid) | extra

    # -- the sticky adoption rule -----------------------------------------------------------
    def _consider(self, model_type: str, view: SelectionView) -> None:
        state = self._states.setdefault(model_type, RoutingState())
        if view.report_id is None or view.report_id == state.considered_report_id:
            return
        proposed = {skill: row["chosen"] for skill, row in view.selection.items()}
        current = state.current.routes
        routes, kept = {}, []
        for skill, new in proposed.items():
            old = current.get(skill)
            if old is None or old == new or not self._worse(view, skill, new, old):
                routes[skill] = new
            else:
                routes[skill] = old
                kept.append(f"{skill}: kept {old} over {new} (worse beyond the 95% interval)")
        changed = routes != current
        if changed:
            reason = f"new selection report {view.report_id}"
            if kept:
                reason += "; " + "; ".join(kept)
            new_state = RoutingState(Serving(state.current.pin, routes, view.report_id),
                                     state.current, view.report_id)
            audit = {"action": "adopt", "candidate": _describe(Serving(None, routes)),
                     "previous": _describe(Serving(None, current)) if current else None,
                     "key_id": SYSTEM, "reason": reason}
        else:
            new_state = RoutingState(state.current, state.previous, view.report_id)
            audit = {"action": "keep", "candidate": _describe(state.current), "previous": None, "key_id": SYSTEM,
                     "reason": f"new selection report {view.report_id}: "
                               + ("; ".join(kept) if kept else "same choices as served")}
        self.store.save(model_type, new_state, audit)
        self._states[model_type] = new_state

    @staticmethod
    def _worse(view: SelectionView, skill: str, new: str, old: str) -> bool:
        a, b = view.evidence.get((new, skill)), view.evidence.get((old, skill))
        if a is None or b is None or a.n == 0 or b.n == 0:
            return False  # the served candidate has no evidence in the new report: nothing to keep it by
        return a.ci_high < b.ci_low

    # -- changes a user makes -----------------------------------------------------------------
    def pin(self, model_type: str, candidate: str, key_id: str, reason: str) -> RoutingState:
        with self._lock:
            state = self.state(model_type)
            new = RoutingState(Serving(candidate, dict(state.current.routes), state.current.report_id),
                               state.current, state.considered_report_id)
            self.store.save(model_type, new, {"action": "pin", "candidate": candidate,
                                              "previous": _describe(state.current), "key_id": key_id,
                                              "reason": reason})
            self._states[model_type] = new
            return new

    def unpin(self, model_type: str, key_id: str, reason: str) -> RoutingState:
        with self._lock:
            state = self.state(model_type)
            if not state.current.pin:
                raise NotFound(f"{model_type!r} has no pin to remove")
            new = RoutingState(Serving(None, dict(state.current.routes), state.current.report_id),
                               state.current, state.considered_report_id)
            self.store.save(model_type, new, {"action": "unpin", "candidate": _describe(new.current),
                                              "previous": _describe(state.current), "key_id": key_id,
                                              "reason": reason})
            self._states[model_type] = new
            return new

    def rollback(self, model_type: str, key_id: str, reason: str) -> RoutingState:
        """Swap current and previous; the rejected report stays considered, so it is not re-adopted."""
        with self._lock:
            state = self.state(model_type)
            if state.previous is None:
                raise NotFound(f"{model_type!r} has no previous serving state to roll back to")
            new = RoutingState(state.previous, state.current, state.considered_report_id)
            self.store.save(model_type, new, {"action": "rollback", "candidate": _describe(new.current),
                                              "previous": _describe(state.current), "key_id": key_id,
                                              "reason": reason})
            self._states[model_type] = new
            return new
