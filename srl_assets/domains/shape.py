"""Checks a JSON value against a domain's ``spec_shape`` (see ``domains.base``)."""

from __future__ import annotations

from typing import Any

MAX_SHAPE_ERRORS = 10
MAX_LIST_ITEMS = 200


def shape_errors(value: Any, shape: Any, path: str = "spec") -> list[str]:
    """Every place where ``value`` does not have ``shape`` (bounded to a few errors)."""
    errors: list[str] = []
    _check(value, shape, path, errors)
    return errors[:MAX_SHAPE_ERRORS]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(value: Any, shape: Any, path: str, errors: list[str]) -> None:
    if len(errors) >= MAX_SHAPE_ERRORS:
        return
    if shape is str:
        if not isinstance(value, str):
            errors.append(f"{path} must be a string, got {_type_name(value)}")
    elif shape is bool:
        if not isinstance(value, bool):
            errors.append(f"{path} must be a boolean, got {_type_name(value)}")
    elif shape is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path} must be an integer, got {_type_name(value)}")
    elif shape is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path} must be a number, got {_type_name(value)}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            errors.append(f"{path} must be a list, got {_type_name(value)}")
        elif len(value) > MAX_LIST_ITEMS:
            errors.append(f"{path} has {len(value)} items, limit {MAX_LIST_ITEMS}")
        else:
            for i, item in enumerate(value):
                _check(item, shape[0], f"{path}[{i}]", errors)
    elif isinstance(shape, tuple) and shape[0] == "map":
        if not isinstance(value, dict):
            errors.append(f"{path} must be an object, got {_type_name(value)}")
        elif len(value) > MAX_LIST_ITEMS:
            errors.append(f"{path} has {len(value)} keys, limit {MAX_LIST_ITEMS}")
        else:
            for key, item in value.items():
                _check(item, shape[1], f"{path}.{key}", errors)
    elif isinstance(shape, dict):
        if not isinstance(value, dict):
            errors.append(f"{path} must be an object, got {_type_name(value)}")
            return
        for key, sub in shape.items():
            optional = isinstance(sub, tuple) and sub[0] == "optional"
            if key not in value:
                if not optional:
                    errors.append(f"{path}.{key} is missing")
                continue
            _check(value[key], sub[1] if optional else sub, f"{path}.{key}", errors)
    else:  # a programming error in a domain, not bad model output
        raise TypeError(f"unsupported shape {shape!r} at {path}")
