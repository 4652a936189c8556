"""Which published checkpoints and work folders to delete: the policy, without Dagster or a store.

Kept per (stage, model type): the ``keep`` newest checkpoints, plus every checkpoint something still
names (the current performance report, the current model selection, a serving pin). Work folders
(``<work_root>/<stage>/<model_type>/<digest>``, what a failed or retried op leaves behind) keep the
``keep`` newest per (stage, model type); fetched copies (``<work_root>/fetched/<sha256[:16]>``) only
those of checkpoints that are kept.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

KEEP_ENV = "SRL_KEEP_CHECKPOINTS"
DEFAULT_KEEP = 3

# A pin source answers, for one model type, the checkpoint keys or sha256 digests that must stay.
PinSource = Callable[[str], Iterable[str]]
_PIN_SOURCES: dict[str, PinSource] = {}


def register_pin_source(name: str, source: PinSource) -> None:
    """Another owner of checkpoint references (e.g. the serving API's pins) protects what it names."""
    _PIN_SOURCES[name] = source


def unregister_pin_source(name: str) -> None:
    _PIN_SOURCES.pop(name, None)


def pinned(model_type: str) -> set[str]:
    out: set[str] = set()
    for name, source in _PIN_SOURCES.items():
        try:
            out.update(source(model_type))
        except Exception as exc:  # an unreadable pin source must not let its pins be deleted
            raise RuntimeError(f"pin source {name!r} failed for {model_type}: {exc}; nothing deleted") from exc
    return out


def keep_count(raw: str | None = None) -> int:
    """``SRL_KEEP_CHECKPOINTS`` (default 3): checkpoints kept per stage and model type; 0 = keep all."""
    raw = os.environ.get(KEEP_ENV, str(DEFAULT_KEEP)) if raw is None else raw
    if not raw.strip().isdigit():
        raise ValueError(f"{KEEP_ENV} must be a non-negative integer (0 = keep every checkpoint), got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Published:
    key: str
    sha256: str
    created_at: str


def to_delete(published: list[Published], keep: int, protected: set[str]) -> list[Published]:
    """The checkpoints of one (stage, model type) beyond the ``keep`` newest that nothing names.

    >>> rows = [Published(f"k{i}", f"s{i}", f"2025-01-0{i}") for i in range(1, 6)]
    >>> [p.key for p in to_delete(rows, 2, {"s1"})]
    ['k3', 'k2']
    """
    if keep <= 0:
        return []
    newest_first = sorted(published, key=lambda p: p.created_at, reverse=True)
    return [p for p in newest_first[keep:] if p.key not in protected and p.sha256 not in protected]


def prune_work_folders(work_root: Path, stage: str, model_type: str, keep: int, current: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest work folders of one (stage, model type); never ``current``."""
    parent = work_root / stage / model_type
    if keep <= 0 or not parent.is_dir():
        return []
    folders = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = [p for p in folders[keep:] if current is None or p.resolve() != current.resolve()]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def prune_fetched(work_root: Path, kept_sha256: set[str], all_sha256: set[str]) -> list[Path]:
    """Delete fetched copies of checkpoints that were deleted (``all_sha256 - kept_sha256``)."""
    fetched = work_root / "fetched"
    gone = {s[:16] for s in all_sha256 - kept_sha256} - {s[:16] for s in kept_sha256}
    removed = [fetched / name for name in gone if (fetched / name).is_dir()]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed
