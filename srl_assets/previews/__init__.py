"""Previews: a model type's spec drawn as a designer would look at it (no Dagster here).

``render(model_type, spec, failures)`` returns a PNG (and for sound a WAV): a face from blendshape
weights, an L-system tree, floor plans with an elevation, a spectrogram with synthesized audio, or
a sheet of values for the other types. The keys behind failed skills are highlighted. It never
raises: a spec it cannot read gives the "unreadable" image, and an unknown model type (an eighth
domain not registered here yet) gets the generic card.

Renderers are registered by name (``REGISTRY``, one line per model type) and each module maps its
model type's skills to the spec keys they read (``SKILL_KEYS``).
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Sequence

from srl_assets.domains.base import Failure
from srl_assets.previews import common
from srl_assets.trajectory import FINAL_TITLE, parse_spec, parse_trajectory

log = logging.getLogger(__name__)

#: model type -> "module:function" drawing ``(spec: dict, marks: Marks) -> (png, wav | None)``.
REGISTRY: dict[str, str] = {
    "personality": "srl_assets.previews.cards:render_personality",
    "facial": "srl_assets.previews.facial:render_facial",
    "building": "srl_assets.previews.building:render_building",
    "animal": "srl_assets.previews.cards:render_animal",
    "plant": "srl_assets.previews.cards:render_plant",
    "tree": "srl_assets.previews.tree:render_tree",
    "sound": "srl_assets.previews.sound:render_sound",
}
GENERIC = "srl_assets.previews.cards:render_generic"

# Matplotlib's text and font caches are shared by all figures; the API may render from threads.
_LOCK = threading.RLock()


@dataclass(frozen=True)
class Rendering:
    png: bytes                 # always a valid PNG
    wav: bytes | None          # sound only (16-bit PCM WAV), else None
    readable: bool             # False -> the "unreadable" image
    marked: tuple[str, ...]    # skills whose values are highlighted as failed


def renderable_types() -> list[str]:
    """Model types with their own preview (any other type gets the generic card)."""
    return list(REGISTRY)


@cache
def _function(target: str) -> Callable[..., tuple[bytes, bytes | None]]:
    module_name, _, fn_name = target.partition(":")
    return getattr(importlib.import_module(module_name), fn_name)


def skill_keys(model_type: str) -> dict[str, tuple[str, ...]]:
    """Skill -> the spec keys it reads, as the preview of ``model_type`` highlights them."""
    if model_type not in REGISTRY:
        return {}
    module = importlib.import_module(REGISTRY[model_type].partition(":")[0])
    return module.SKILL_KEYS[model_type]


class Unreadable(Exception):
    """Raised by a renderer when nothing in the spec can be drawn; becomes the unreadable image."""


def render(model_type: str, spec: Any, failures: Sequence[Failure] = ()) -> Rendering:
    """Draw ``spec`` for ``model_type``, highlighting ``failures``.

    ``spec`` is a dict, its JSON text, or a trajectory whose ``Final spec`` step holds it.
    """
    name = model_type if isinstance(model_type, str) else common.clip(model_type, 30)
    found = common.normalize_failures(failures)
    if isinstance(spec, str):
        parsed, error = parse_spec(spec)
        if parsed is None:  # maybe a whole trajectory: its final step holds the spec
            steps = parse_trajectory(spec).steps
            if steps and steps[-1].title == FINAL_TITLE:
                parsed, error = parse_spec(steps[-1].action)
        if parsed is None:
            return _unreadable(name, error or "spec is not JSON", found)
        spec = parsed
    if not isinstance(spec, dict):
        return _unreadable(name, f"a spec must be a JSON object, got {type(spec).__name__}", found)
    target = REGISTRY.get(name, GENERIC)
    with _LOCK:
        try:
            draw = _function(target)
            marks = common.Marks(found, skill_keys(name))
            png, wav = draw(spec, marks) if target != GENERIC else draw(spec, marks, name)
        except Unreadable as exc:
            return _unreadable(name, str(exc), found)
        except Exception as exc:  # noqa: BLE001 - the contract: a preview never raises on model output
            # A renderer bug, not bad output: say so in the log, and still answer with an image.
            log.warning("preview of a %s spec failed; showing the unreadable image", name, exc_info=True)
            return _unreadable(name, f"renderer error {type(exc).__name__}: {exc}", found)
    return Rendering(png=png, wav=wav, readable=True, marked=marks.skills)


def _unreadable(model_type: str, reason: str, failures: tuple[Failure, ...]) -> Rendering:
    with _LOCK:
        png = common.unreadable_png(model_type, reason)
    return Rendering(png=png, wav=None, readable=False, marked=())
