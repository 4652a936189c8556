"""The contract every model-type domain implements (no Dagster here).

A domain owns three things about its model type:

* how its rules file is validated (``validate_rules``),
* how tasks are drawn from the rules and which skills (constraint names) each exercises
  (``sample_params`` / ``task_skills`` / ``describe``),
* how an expert solves a task step by step (``plan``), how a final spec is checked
  (``spec_shape`` + ``check``) and how a spec is broken on purpose for one skill (``mutate``).

Everything generic (rules loading, task splitting, trajectory format, scoring, retrieval) lives
outside the domains, so an eighth model type is one module, one rules file and one registry line.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

# ----------------------------------------------------------------------------------------------
# Errors and verdict pieces


class RulesError(ValueError):
    """A rules or lore file is malformed. The message always names the file and the field."""

    def __init__(self, file: str, field: str, message: str):
        self.file = file
        self.field = field
        super().__init__(f"{file}: field '{field}': {message}")


@dataclass(frozen=True)
class Failure:
    """One failed constraint of a spec: the skill (constraint name) and a human reason."""

    skill: str
    reason: str


@dataclass(frozen=True)
class LorePassage:
    """One section of a lore Markdown file: ``## rule.id: Title`` followed by its body."""

    rule_id: str
    title: str
    text: str


@dataclass
class Rules:
    """A validated rules file plus its lore. ``version`` = declared semver + content hash."""

    model_type: str
    semver: str
    content_hash: str
    data: dict[str, Any]
    lore: list[LorePassage]
    source: str

    @property
    def version(self) -> str:
        return f"{self.semver}+{self.content_hash[:12]}"


@dataclass
class Plan:
    """An expert solution: reasoning steps (title, action) and the final spec they lead to."""

    steps: list[tuple[str, str]]
    spec: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Rules validation helper


_MISSING = object()


@dataclass
class RulesValidator:
    """Typed accessors over a parsed rules mapping that raise ``RulesError(file, field, ...)``.

    Paths are dotted (``biomes.desert.temperature_c``); list items are addressed as ``[i]``.
    """

    file: str
    data: Any
    _seen: set[str] = field(default_factory=set)

    def fail(self, path: str, message: str) -> RulesError:
        return RulesError(self.file, path, message)

    def at(self, path: str, default: Any = _MISSING) -> Any:
        node = self.data
        for part in _split_path(path):
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    if default is not _MISSING:
                        return default
                    raise self.fail(path, "is missing")
                node = node[part]
            else:
                if not isinstance(node, dict) or part not in node:
                    if default is not _MISSING:
                        return default
                    raise self.fail(path, "is missing")
                node = node[part]
        return node

    def mapping(self, path: str, *, non_empty: bool = True) -> dict[str, Any]:
        value = self.at(path)
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, got {type(value).__name__}")
        if non_empty and not value:
            raise self.fail(path, "must not be empty")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(f"{path}.{key}", "keys must be strings")
        return value

    def sequence(self, path: str, *, non_empty: bool = True) -> list[Any]:
        value = self.at(path)
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list, got {type(value).__name__}")
        if non_empty and not value:
            raise self.fail(path, "must not be empty")
        return value

    def string(self, path: str, *, choices: set[str] | list[str] | None = None) -> str:
        value = self.at(path)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(path, f"unknown value {value!r}; expected one of {sorted(choices)}")
        return value

    def strings(self, path: str, *, choices: set[str] | list[str] | None = None,
                non_empty: bool = True) -> list[str]:
        items = self.sequence(path, non_empty=non_empty)
        return [self.string(f"{path}[{i}]", choices=choices) for i in range(len(items))]

    def number(self, path: str, *, lo: float | None = None, hi: float | None = None,
               integer: bool = False) -> float:
        value = self.at(path)
        ok_type = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            kind = "an integer" if integer else "a number"
            raise self.fail(path, f"must be {kind}, got {value!r}")
        if value != value:  # NaN
            raise self.fail(path, "must not be NaN")
        if lo is not None and value < lo:
            raise self.fail(path, f"{value!r} is out of range: below the minimum {lo}")
        if hi is not None and value > hi:
            raise self.fail(path, f"{value!r} is out of range: above the maximum {hi}")
        return value

    def number_range(self, path: str, *, lo: float | None = None, hi: float | None = None,
                     integer: bool = False) -> tuple[float, float]:
        """A two-item ``[min, max]`` list with min <= max inside [lo, hi]."""
        items = self.sequence(path)
        if len(items) != 2:
            raise self.fail(path, f"must be a [min, max] pair, got {len(items)} items")
        a = self.number(f"{path}[0]", lo=lo, hi=hi, integer=integer)
        b = self.number(f"{path}[1]", lo=lo, hi=hi, integer=integer)
        if a > b:
            raise self.fail(path, f"min {a} is greater than max {b}")
        return a, b

    def reference(self, path: str, known: set[str] | dict[str, Any] | list[str],
                  what: str = "name") -> str:
        value = self.at(path)
        # Strings or integers (facial variants are AU numbers); never a bool standing in for 0/1.
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value not in known:
            raise self.fail(path, f"unknown {what} {value!r}; known: {sorted(known)}")
        return value


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in path.split("."):
        while "[" in chunk:
            head, _, rest = chunk.partition("[")
            if head:
                parts.append(head)
            index, _, chunk = rest.partition("]")
            parts.append(int(index))
        if chunk:
            parts.append(chunk)
    return parts


# ----------------------------------------------------------------------------------------------
# Task parameters (what a client may ask for: the serving API validates requests with these)


class ParamsError(ValueError):
    """A task's parameters break the rules. ``field`` names the parameter (``""`` for the whole)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"params.{field}: {message}" if field else f"params: {message}")


class ParamsChecker:
    """Typed accessors over a task's params that raise ``ParamsError(field, ...)``.

    ``keys`` first (unknown or missing keys), then one accessor per field; each returns the value,
    or ``None`` for an absent optional key.
    """

    def __init__(self, params: Any):
        if not isinstance(params, dict):
            raise ParamsError("", f"must be a JSON object, got {type(params).__name__}")
        self.params = params

    def keys(self, required: set[str] | list[str] | tuple[str, ...],
             optional: set[str] | list[str] | tuple[str, ...] = ()) -> None:
        allowed = set(required) | set(optional)
        for key in self.params:
            if key not in allowed:
                raise ParamsError(str(key), f"unknown parameter; allowed: {sorted(allowed)}")
        for key in required:
            if key not in self.params:
                raise ParamsError(key, "is required")

    def choice(self, key: str, choices: Any, what: str = "value") -> Any:
        if key not in self.params:
            return None
        value = self.params[key]
        known = sorted(choices)
        # Strings or integers (facial variants are AU numbers); never a bool standing in for 0/1.
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value not in known:
            raise ParamsError(key, f"unknown {what} {value!r}; allowed: {known}")
        return value

    def boolean(self, key: str) -> bool | None:
        if key not in self.params:
            return None
        value = self.params[key]
        if not isinstance(value, bool):
            raise ParamsError(key, f"must be true or false, got {value!r}")
        return value

    def number(self, key: str, lo: float, hi: float, integer: bool = False) -> float | None:
        if key not in self.params:
            return None
        value = self.params[key]
        ok_type = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type) or value != value:
            raise ParamsError(key, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
        if not lo <= value <= hi:
            raise ParamsError(key, f"{value!r} is outside the rules' range [{lo:g}, {hi:g}]")
        return value

    def mapping(self, key: str) -> dict[str, Any] | None:
        if key not in self.params:
            return None
        value = self.params[key]
        if not isinstance(value, dict) or not value:
            raise ParamsError(key, f"must be a non-empty JSON object, got {value!r}")
        return value


# ----------------------------------------------------------------------------------------------
# Spec shape (checked generically by the Verifier before the domain's own checks)
#
# A shape is one of: str, int, float (any JSON number, not bool), bool,
# [shape] (a list of shape), {"key": shape, ...} (a dict with at least these keys),
# ("optional", shape) as a dict value (key may be absent), or ("map", shape) (str -> shape).

Shape = Any


# ----------------------------------------------------------------------------------------------
# The domain contract


class Domain(abc.ABC):
    """One model type. Subclasses are stateless; every method gets the validated ``Rules``."""

    name: ClassVar[str]
    #: skill (constraint) name -> what it checks. Every skill must be checkable and mutable.
    skills: ClassVar[dict[str, str]]
    #: the JSON shape of a final spec; see "Spec shape" above.
    spec_shape: ClassVar[Shape]

    @abc.abstractmethod
    def validate_rules(self, v: RulesValidator) -> None:
        """Check the domain part of a rules file; raise ``v.fail(path, reason)`` on error.

        Called with the whole parsed YAML (``model_type``, ``version`` and ``data`` already
        checked); domain fields live under ``data.``.
        """

    @abc.abstractmethod
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        """Draw one task: a JSON-serializable combination of constraints from the rules."""

    @abc.abstractmethod
    def validate_params(self, params: Any, rules: Rules) -> None:
        """Check params a client sends (the serving API) against the rules, before any other method.

        Raise ``ParamsError(field, reason)`` (``ParamsChecker`` helps) for an unknown or missing key,
        a value of the wrong type or outside the rules, or a combination the rules do not allow.
        Every ``sample_params`` draw must pass; params that pass must be safe for ``task_skills``,
        ``describe``, ``plan`` and ``check``.
        """

    @abc.abstractmethod
    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        """The skills (subset of ``skills``) a task with these params exercises."""

    @abc.abstractmethod
    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        """The task as the model reads it (one short paragraph, no answer in it)."""

    @abc.abstractmethod
    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        """The procedural expert: reasoning steps and a final spec that passes ``check``."""

    @abc.abstractmethod
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        """Failures of a shape-valid spec against the task; only skills in ``task_skills``.

        Must not raise for any shape-valid spec (values may still be absurd: negative, huge,
        unknown names).
        """

    @abc.abstractmethod
    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        """A copy of a passing spec broken so that ``skill`` (and ideally only it) fails."""
