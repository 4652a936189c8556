"""The registry of model-type domains. An eighth model type is one line here."""

from __future__ import annotations

import importlib
from functools import cache

from srl_assets.domains.base import Domain

# model type -> "module:Class". Order is the partition order shown in the UI.
REGISTRY: dict[str, str] = {
    "personality": "srl_assets.domains.personality:PersonalityDomain",
    "facial": "srl_assets.domains.facial:FacialDomain",
    "building": "srl_assets.domains.building:BuildingDomain",
    "animal": "srl_assets.domains.animal:AnimalDomain",
    "plant": "srl_assets.domains.plant:PlantDomain",
    "tree": "srl_assets.domains.tree:TreeDomain",
    "sound": "srl_assets.domains.sound:SoundDomain",
}

MODEL_TYPES: tuple[str, ...] = tuple(REGISTRY)


@cache
def get_domain(model_type: str) -> Domain:
    if model_type not in REGISTRY:
        raise KeyError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")
    module_name, _, class_name = REGISTRY[model_type].partition(":")
    domain = getattr(importlib.import_module(module_name), class_name)()
    if domain.name != model_type:
        raise ValueError(f"{REGISTRY[model_type]} declares name {domain.name!r}, registered as {model_type!r}")
    return domain
