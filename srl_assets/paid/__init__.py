"""Hosted ("paid") fine-tuning: one module per provider behind ``base.PaidFineTuner``.

``get_provider("openai", client=...)`` builds a registered provider; adding a fourth provider is
one module and one line in ``_MODULES``. Provider modules are imported lazily so that importing
this package does not import every SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

from srl_assets.paid.base import PaidFineTuner
from srl_assets.registry import Registry

PROVIDERS: Registry[type[PaidFineTuner]] = Registry("paid fine-tuning provider")

# name -> module that registers it with @PROVIDERS.register(name)
_MODULES = {
    "openai": "srl_assets.paid.openai_provider",
    "vertex": "srl_assets.paid.vertex_provider",
    "bedrock": "srl_assets.paid.bedrock_provider",
}


def _load(name: str) -> None:
    if name not in PROVIDERS and name in _MODULES:
        importlib.import_module(_MODULES[name])


def provider_names() -> list[str]:
    return sorted(set(_MODULES) | set(PROVIDERS.names()))


def provider_class(name: str) -> type[PaidFineTuner]:
    _load(name)
    if name not in PROVIDERS:
        raise ValueError(f"unknown paid fine-tuning provider {name!r}; valid names: {provider_names()}")
    return PROVIDERS.get(name)


def get_provider(name: str, **clients: Any) -> PaidFineTuner:
    """An instance of provider ``name``; ``clients`` (SDK clients, ``clock``) go to its constructor."""
    return provider_class(name)(**clients)
