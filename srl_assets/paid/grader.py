"""Reinforcement graders generated from the project's own Verifier.

A hosted grader runs in the provider's sandbox (OpenAI python grader: ``def grade(sample, item) ->
float``, at most 256 kB, no network, fixed packages; Vertex reward snippet: ``def evaluate(example,
response) -> float`` in [-1, 1], reading the dataset line's ``references`` and a ``Content``
response). The Verifier and the domains use only the standard library, so the grader is their
source code bundled into one file with a tiny module loader, plus the model type's rules as JSON:
the hosted reward is exactly the local verifier score, not a re-implementation that could drift.
Each RL item carries its task row (OpenAI ``item["task"]``, Vertex ``references["task"]``), so the
grader rebuilds the task and verifies the sampled trajectory against it.

Why it might not be possible (raised as ``GraderUnavailable`` with the reason): a domain module
that imports a non-standard package, or a bundle over the provider's size limit. Note too that
OpenAI deprecates graders together with fine-tuning (no new jobs after 2027-01-06).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from srl_assets.domains import REGISTRY
from srl_assets.domains.base import Rules

OPENAI_GRADER_LIMIT_BYTES = 256 * 1024

# Dependency order: each module only imports the ones before it.
_COMMON = ["srl_assets.trajectory", "srl_assets.domains.shape", "srl_assets.domains.base",
           "srl_assets.dynamic_example_generator"]
_PACKAGES = ["srl_assets", "srl_assets.domains", "srl_assets.collaboration"]


class GraderUnavailable(RuntimeError):
    pass


def _module_source(name: str) -> str:
    path = Path(importlib.import_module(name).__file__)
    source = path.read_text()
    std = set(sys.stdlib_module_names) | {"__future__"}
    for node in ast.walk(ast.parse(source)):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for mod in mods:
            top = mod.split(".")[0]
            if top not in std and mod not in _COMMON + _PACKAGES and not mod.startswith("srl_assets.domains."):
                raise GraderUnavailable(f"{path.name} imports {mod!r}, which a hosted grader sandbox does not have")
    return source


_LOADER = '''
import json as _json, sys as _sys, types as _types

def _install():
    if "srl_assets.collaboration.verifier" in _sys.modules:
        return
    for _pkg in _PACKAGES:
        _m = _types.ModuleType(_pkg); _m.__path__ = []; _sys.modules[_pkg] = _m
    for _name, _src in _SOURCES:
        _m = _types.ModuleType(_name); _sys.modules[_name] = _m
        exec(compile(_src, _name.replace(".", "/") + ".py", "exec"), _m.__dict__)

def _score(text, task_row):
    _install()
    from srl_assets.collaboration.verifier import Verifier
    from srl_assets.domains.base import Rules
    from srl_assets.dynamic_example_generator import Task
    import importlib
    _mod, _, _cls = _DOMAIN.partition(":")
    domain = getattr(importlib.import_module(_mod), _cls)()
    rules = Rules(**{**_RULES, "lore": []})
    task = Task.from_row(_json.loads(task_row) if isinstance(task_row, str) else task_row)
    text = text if isinstance(text, str) else ""
    stripped = text.lstrip()
    if stripped.startswith("<think>") and "</think>" in stripped:  # same as prompts.strip_think
        text = stripped.split("</think>", 1)[1].lstrip("\\n")
    return float(Verifier(domain, rules).verify_trajectory(task, text).score)
'''

_ENTRY = {
    "grade": '''
def grade(sample, item) -> float:
    """OpenAI python grader: the verifier score in [0, 1] of the sampled trajectory."""
    return _score(sample.get("output_text", ""), item["task"])
''',
    # Vertex hands the reward snippet the dataset line (camelCase, custom data under
    # ``references`` as string values; vertex_provider puts the task row in references["task"])
    # and the response as a Content ({"role": "model", "parts": [{"text": ...}]}).
    "evaluate": '''
def evaluate(example, response) -> float:
    """Vertex reward: the verifier score in [0, 1] of the sampled trajectory (Vertex clips to [-1, 1])."""
    parts = (response or {}).get("parts", []) if isinstance(response, dict) else []
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
    task = ((example or {}).get("references") or {}).get("task")
    if not task:
        return 0.0
    return _score(text, task)
''',
}


def grader_source(model_type: str, rules: Rules, entry: str = "grade") -> str:
    """A self-contained Python file whose ``grade`` (OpenAI) or ``evaluate`` (Vertex) function
    returns the project's verifier score for a sampled trajectory."""
    if entry not in _ENTRY:
        raise ValueError(f"entry must be one of {sorted(_ENTRY)}, got {entry!r}")
    domain_module = REGISTRY[model_type].partition(":")[0]
    modules = [*_COMMON, domain_module, "srl_assets.collaboration.verifier"]
    sources = [(m, _module_source(m)) for m in modules]
    rules_json = {"model_type": rules.model_type, "semver": rules.semver, "content_hash": rules.content_hash,
                  "data": rules.data, "source": rules.source}
    return "\n".join([
        f"# Generated by srl_assets.paid.grader for model type {model_type!r}, rules {rules.version}.",
        "# Do not edit: regenerate from the project's Verifier.",
        f"_PACKAGES = {_PACKAGES!r}",
        f"_SOURCES = {sources!r}",
        f"_DOMAIN = {REGISTRY[model_type]!r}",
        f"_RULES = {rules_json!r}",
        _LOADER, _ENTRY[entry]])


def openai_python_grader(model_type: str, rules: Rules) -> dict:
    """The ``grader`` of an OpenAI reinforcement job; raises GraderUnavailable with the reason."""
    source = grader_source(model_type, rules, "grade")
    size = len(source.encode())
    if size > OPENAI_GRADER_LIMIT_BYTES:
        raise GraderUnavailable(f"the {model_type} grader is {size} bytes, over OpenAI's "
                                f"{OPENAI_GRADER_LIMIT_BYTES}-byte limit for python graders")
    return {"type": "python", "name": f"srl-verifier-{model_type}", "source": source}


def vertex_reward_snippet(model_type: str, rules: Rules) -> str:
    """The reward snippet (``def evaluate(example, response) -> float``) of a Vertex reinforcement
    tuning job, passed as ``hyperparameters["grader"]``; raises GraderUnavailable with the reason."""
    return grader_source(model_type, rules, "evaluate")
