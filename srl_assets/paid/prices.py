"""The dated, versioned price table (prices.yaml next to this file).

``model_prices("openai", "gpt-4.1-mini-2025-04-14")`` gives a ``ModelPrices``; a missing entry is an
error naming the file, provider and model, because a silent 0 would make a paid model look free
to the selector. ``measured_cost`` turns the usage an API returned into dollars.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from srl_assets.paid.base import ModelPrices

PRICES_FILE = Path(__file__).with_name("prices.yaml")
_FIELDS = {"training_per_1m_tokens", "training_per_hour", "input_per_1k", "output_per_1k", "hosting_per_hour"}


@functools.lru_cache(maxsize=None)
def _table(path: str = str(PRICES_FILE)) -> dict:
    data = yaml.safe_load(Path(path).read_text())
    for provider, block in data["providers"].items():
        for model, entry in block["models"].items():
            unknown = set(entry) - _FIELDS
            if unknown:
                raise ValueError(f"{path}: providers.{provider}.models.{model}: unknown fields {sorted(unknown)}")
            if any(float(v) < 0 for v in entry.values()):
                raise ValueError(f"{path}: providers.{provider}.models.{model}: prices must be >= 0")
    return data


def version() -> str:
    return str(_table()["version"])


def model_prices(provider: str, model: str) -> ModelPrices:
    providers = _table()["providers"]
    if provider not in providers or model not in providers[provider]["models"]:
        raise LookupError(f"{PRICES_FILE}: no price for providers.{provider}.models.{model}; add it with its source")
    block = providers[provider]
    entry = block["models"][model]
    return ModelPrices(**{k: float(v) for k, v in entry.items()}, source=block["source"],
                       as_of=str(block.get("as_of", version())))


def has_prices(provider: str, model: str) -> bool:
    providers = _table()["providers"]
    return provider in providers and model in providers[provider]["models"]


def measured_cost(prices: ModelPrices, input_tokens: int, output_tokens: int) -> float:
    """Inference cost in USD from the usage an API returned (hosting is billed separately per hour)."""
    return input_tokens / 1000 * prices.input_per_1k + output_tokens / 1000 * prices.output_per_1k


def training_cost(prices: ModelPrices, trained_tokens: int | None, hours: float | None = None) -> float | None:
    """Measured training cost from the billable tokens (or hours) a finished job reports."""
    if prices.training_per_1m_tokens is not None and trained_tokens is not None:
        return trained_tokens * prices.training_per_1m_tokens / 1e6
    if prices.training_per_hour is not None and hours is not None:
        return hours * prices.training_per_hour
    return None
