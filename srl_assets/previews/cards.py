"""Card previews (portrait-free sheets) for personality, animal and plant, and the generic card."""

from __future__ import annotations

import math
from typing import Any

from srl_assets.previews.common import Marks, Reader, Row, card_png, clip, finite, generic_rows

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")

SKILL_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "personality": {
        "emotion_intensity": ("primary", "emotion"),
        "facial_expression": ("facial",),
        "vocal_tone": ("valence", "vocal"),
        "emotion_action": ("action",),
        "big_five": ("traits",),
        "trait_behavior": ("behavior",),
        "faction_ideals": ("faction", "ideals"),
    },
    "animal": {
        "class_anatomy": ("class", "legs", "wings", "covering"),
        "diet_dentition": ("diet", "dentition"),
        "habitat_adaptations": ("habitat", "adaptations"),
        "size_mass": ("size", "mass_kg"),
        "danger_level": ("danger",),
        "locomotion": ("moves",),
    },
    "plant": {
        "biome_climate": ("biome", "temperature_c", "rainfall_mm"),
        "growth_form_height": ("growth_form", "height_m"),
        "family_edibility": ("family", "edibility"),
        "flowering_season": ("flowering_season",),
        "rarity": ("rarity", "spawn_weight"),
        "soil_ph": ("soil", "soil_ph"),
    },
}


def _listing(r: Reader, key: str) -> str:
    items = r.items(key)
    return ", ".join(clip(x, 24) for x in items) if items else "–"


def _value(r: Reader, key: str, unit: str = "") -> tuple[str, float | None]:
    """A value as text (numbers with their unit) and as a finite number, if it is one."""
    raw = r.spec.get(key)
    x = finite(raw)
    if x is not None:
        return f"{x:g}{unit}", x
    return ("–" if raw is None else clip(raw)), None


def _pair(r: Reader, key: str) -> tuple[float, float] | None:
    items = r.spec.get(key)
    if isinstance(items, list) and len(items) == 2:
        a, b = finite(items[0]), finite(items[1])
        if a is not None and b is not None:
            return a, b
    if items is not None:
        r.notes.append(f"{key} is not a [min, max] pair of numbers")
    return None


def _need_some(spec: dict[str, Any], model_type: str) -> None:
    from srl_assets.previews import Unreadable

    known = {k for keys in SKILL_KEYS[model_type].values() for k in keys}
    if not known & set(spec):
        raise Unreadable(f"none of the {model_type} keys ({', '.join(sorted(known)[:6])}, …) is in the spec")


def render_personality(spec: dict[str, Any], marks: Marks) -> tuple[bytes, None]:
    _need_some(spec, "personality")
    r = Reader(spec)
    rows = [
        Row("primary emotion", ("primary",), r.text("primary", "–")),
        Row("valence", ("valence",), r.text("valence", "–")),
        Row("face", ("facial",), r.text("facial", "–")),
        Row("voice", ("vocal",), r.text("vocal", "–")),
        Row("action", ("action",), r.text("action", "–")),
    ]
    traits = r.mapping("traits")
    for t in TRAITS:
        x = finite(traits.get(t))
        rows.append(Row(t, ("traits",), "–" if x is None else f"{x:.2f}",
                        bar=None if x is None else (x, 0.0, 1.0)))
    extra = [k for k in traits if k not in TRAITS]
    if extra:
        rows.append(Row("other traits", ("traits",), ", ".join(clip(k, 16) for k in extra[:4])))
    rows += [
        Row("behaviour", ("behavior",), _listing(r, "behavior")),
        Row("faction", ("faction",), r.text("faction", "–")),
        Row("ideals", ("ideals",), _listing(r, "ideals")),
    ]
    heading = r.text("emotion", "") or "character"
    return card_png(heading.capitalize(), "personality sheet", rows, marks, r.notes,
                    heading_keys=("emotion",)), None


def render_animal(spec: dict[str, Any], marks: Marks) -> tuple[bytes, None]:
    _need_some(spec, "animal")
    r = Reader(spec)
    mass_text, mass = _value(r, "mass_kg", " kg")
    danger_text, danger = _value(r, "danger")
    rows = [
        Row("class", ("class",), r.text("class", "–")),
        Row("legs / wings", ("legs", "wings"), f"{_value(r, 'legs')[0]} legs, {_value(r, 'wings')[0]} wings"),
        Row("covering", ("covering",), r.text("covering", "–")),
        Row("diet", ("diet",), r.text("diet", "–")),
        Row("dentition", ("dentition",), r.text("dentition", "–")),
        Row("habitat", ("habitat",), r.text("habitat", "–")),
        Row("adaptations", ("adaptations",), _listing(r, "adaptations")),
        Row("size", ("size",), r.text("size", "–")),
        # A log scale from a gram to 100 t: masses span eight orders of magnitude.
        Row("mass", ("mass_kg",), mass_text,
            bar=None if mass is None or mass <= 0 else (_log10(mass), -3.0, 5.0)),
    ]
    if "danger" in spec:
        rows.append(Row("danger", ("danger",), danger_text,
                        bar=None if danger is None else (danger, 0.0, 5.0)))
    if "moves" in spec:
        rows.append(Row("moves", ("moves",), _listing(r, "moves")))
    what = " ".join(x for x in (r.text("size"), r.text("diet"), r.text("class")) if x) or "animal"
    sub = f"of the {r.text('habitat')}" if r.text("habitat") else "animal sheet"
    return card_png(what.capitalize(), sub, rows, marks, r.notes, heading_keys=("class",)), None


def render_plant(spec: dict[str, Any], marks: Marks) -> tuple[bytes, None]:
    _need_some(spec, "plant")
    r = Reader(spec)
    height_text, height = _value(r, "height_m", " m")
    spawn_text, spawn = _value(r, "spawn_weight")
    ph_text, ph = _value(r, "soil_ph")
    temp, rain = _pair(r, "temperature_c"), _pair(r, "rainfall_mm")
    rows = [
        Row("biome", ("biome",), r.text("biome", "–")),
        Row("temperature", ("temperature_c",), "–" if temp is None else f"{temp[0]:g} to {temp[1]:g} °C",
            span=None if temp is None else (*temp, -40.0, 50.0)),
        Row("rainfall", ("rainfall_mm",), "–" if rain is None else f"{rain[0]:g} to {rain[1]:g} mm",
            span=None if rain is None else (*rain, 0.0, 5000.0)),
        Row("family", ("family",), r.text("family", "–")),
        Row("growth form", ("growth_form",), r.text("growth_form", "–")),
        Row("height", ("height_m",), height_text,
            bar=None if height is None or height <= 0 else (_log10(height), -2.0, 2.0)),
        Row("edibility", ("edibility",), r.text("edibility", "–")),
        Row("flowering", ("flowering_season",), r.text("flowering_season", "–")),
        Row("rarity", ("rarity",), r.text("rarity", "–")),
        Row("spawn weight", ("spawn_weight",), spawn_text, bar=None if spawn is None else (spawn, 0.0, 1.0)),
        Row("soil", ("soil",), r.text("soil", "–")),
        Row("soil pH", ("soil_ph",), ph_text, bar=None if ph is None else (ph, 0.0, 14.0)),
    ]
    heading = r.text("name", "") or "plant"
    return card_png(heading.capitalize(), "plant sheet", rows, marks, r.notes, heading_keys=("name",)), None


def render_generic(spec: dict[str, Any], marks: Marks, model_type: str = "") -> tuple[bytes, None]:
    """Any model type without its own preview: its top-level values, failures at the foot."""
    rows = generic_rows(spec)
    notes = [f"{len(spec)} keys; the first 14 are shown"] if len(spec) > 14 else []
    if not rows:
        from srl_assets.previews import Unreadable

        raise Unreadable("the spec is an empty object")
    return card_png(clip(model_type or "spec", 40), "values as written (no dedicated preview)", rows,
                    marks, notes), None


def _log10(x: float) -> float:
    return math.log10(x)
