"""Dagster run-config classes generated from the trainers' config dataclasses, so a field is
declared (with its help string) once, in the trainer, and shows in the Dagster launchpad."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import dagster as dg
import pydantic


def config_from_dataclass(cls: type, name: str, defaults: dict[str, Any] | None = None,
                          extra: dict[str, tuple[Any, Any]] | None = None) -> type[dg.Config]:
    """A ``dg.Config`` with the dataclass's fields; ``defaults`` overrides some defaults."""
    hints = typing.get_type_hints(cls)
    overrides = defaults or {}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{name}: no such fields in {cls.__name__}: {sorted(unknown)}")
    fields = {
        f.name: (hints[f.name], pydantic.Field(default=overrides.get(f.name, f.default),
                                               description=f.metadata.get("help")))
        for f in dataclasses.fields(cls)
    }
    fields.update(extra or {})
    return pydantic.create_model(name, __base__=dg.Config, **fields)
