"""Shared pieces of the previews: safe readers of model output, figure -> PNG, cards, marks.

Specs come from models, so nothing here trusts a value: every reader checks the type, rejects
NaN/inf, clamps to a range the drawing can hold and truncates long text, and says what it could
not read (``Reader.notes``) so the image can show it instead of raising.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # before any figure exists: no display, same bytes everywhere

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)

from srl_assets.domains.base import Failure  # noqa: E402

DPI = 80
FAIL_RED = "#c62828"
FAIL_BG = "#fde0dc"
INK = "#222222"
MUTED = "#777777"
PAPER = "#fbfaf7"
MAX_TEXT = 48  # characters of one value shown on an image
MAX_ITEMS = 12  # items of one list shown on an image
# Matplotlib's Agg writer stamps its version into PNG metadata; dropping it keeps bytes equal
# across matplotlib upgrades of the same drawing.
PNG_METADATA = {"Software": None}


# ----------------------------------------------------------------------------------------------
# Failures and marks


def normalize_failures(failures: Any) -> tuple[Failure, ...]:
    """Failures as the Verifier gives them, or dicts ``{"skill", "reason"}`` (e.g. from JSON).

    Anything else is skipped: a malformed verdict must not stop the picture.
    """
    out: list[Failure] = []
    if not isinstance(failures, (list, tuple)):
        return ()
    for f in list(failures)[:50]:
        if isinstance(f, Failure):
            out.append(Failure(clip(f.skill, 40), clip(f.reason, 200)))
        elif isinstance(f, dict) and isinstance(f.get("skill"), str):
            out.append(Failure(clip(f["skill"], 40), clip(f.get("reason", ""), 200)))
    return tuple(out)


@dataclass(frozen=True)
class Marks:
    """Which spec keys to highlight: the keys the failed skills read (``skill_keys``).

    A failure of a skill the preview does not map (``format``, ``schema``, an unknown name) marks
    every key, because the verifier could not say which value is wrong.
    """

    failures: tuple[Failure, ...]
    skill_keys: dict[str, tuple[str, ...]]

    @property
    def skills(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.skill for f in self.failures))

    def keys(self) -> set[str]:
        out: set[str] = set()
        for skill in self.skills:
            out |= set(self.skill_keys.get(skill, ("*",)))
        return out

    def marked(self, *keys: str) -> bool:
        found = self.keys()
        return "*" in found or any(k in found for k in keys)


# ----------------------------------------------------------------------------------------------
# Safe readers


def clip(value: Any, limit: int = MAX_TEXT) -> str:
    """Any value as one short line of text."""
    text = value if isinstance(value, str) else short_repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: Any, unit: str = "", limit: int = 20) -> str:
    """A spec value as a card shows it: a dash when absent, else clipped text with its unit."""
    return "–" if value is None else clip(value, limit) + unit


def short_repr(value: Any, depth: int = 0) -> str:
    """A bounded repr (no recursion past 2 levels, a few items): safe for hostile nesting."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"{'-' if value < 0 else ''}~1e{int(abs(value).bit_length() * 0.30103)}"  # str() of 1e5000 raises
    if isinstance(value, (bool, int)) or value is None:
        return str(value)
    if isinstance(value, str):
        return value[:200]
    if depth >= 2:
        return "…"
    if isinstance(value, dict):
        items = [f"{short_repr(k, 2)}: {short_repr(v, depth + 1)}" for k, v in list(value.items())[:6]]
        return "{" + ", ".join(items) + (", …" if len(value) > 6 else "") + "}"
    if isinstance(value, (list, tuple)):
        items = [short_repr(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
        return "[" + ", ".join(items) + (", …" if len(value) > MAX_ITEMS else "") + "]"
    return f"<{type(value).__name__}>"


def finite(value: Any) -> float | None:
    """A JSON number as a finite float, else None (bools, NaN, inf and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return x if math.isfinite(x) else None


@dataclass
class Reader:
    """Typed access to a spec that records what could not be read, for the image's notes."""

    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def has(self, key: str) -> bool:
        return key in self.spec

    def num(self, key: str, default: float, lo: float, hi: float, node: Any = None,
            label: str | None = None) -> float:
        src = self.spec if node is None else node
        raw = src.get(key) if isinstance(src, dict) else None
        x = finite(raw)
        name = label or key
        if x is None:
            if raw is not None or (isinstance(src, dict) and key in src):
                self.notes.append(f"{name} {clip(raw, 20)} is not a number; drawn as {default:g}")
            else:
                self.notes.append(f"{name} is missing; drawn as {default:g}")
            return default
        if not lo <= x <= hi:
            self.notes.append(f"{name} {x:g} is off the drawable range; clamped to {lo:g}-{hi:g}")
            return min(max(x, lo), hi)
        return x

    def text(self, key: str, default: str = "", node: Any = None) -> str:
        src = self.spec if node is None else node
        raw = src.get(key) if isinstance(src, dict) else None
        if isinstance(raw, str):
            return clip(raw)
        if raw is not None:
            self.notes.append(f"{key} {clip(raw, 20)} is not text")
        return default

    def items(self, key: str, limit: int = MAX_ITEMS, node: Any = None) -> list[Any]:
        src = self.spec if node is None else node
        raw = src.get(key) if isinstance(src, dict) else None
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.notes.append(f"{key} is not a list")
            return []
        if len(raw) > limit:
            self.notes.append(f"{key} has {len(raw)} items; the first {limit} are drawn")
        return raw[:limit]

    def mapping(self, key: str) -> dict[str, Any]:
        raw = self.spec.get(key)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.notes.append(f"{key} is not an object")
            return {}
        return raw


def spec_seed(spec: Any) -> int:
    """A seed from the spec's canonical JSON (sorted keys), so noise is the same for the same spec."""
    try:
        text = json.dumps(spec, sort_keys=True, default=str, allow_nan=True)
    except (TypeError, ValueError, RecursionError):  # mixed key types, deep nesting
        text = short_repr(spec)
    return int(hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------------------------
# Figures


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure of a fixed pixel size (fixed sizes and dpi keep the bytes deterministic)."""
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor=PAPER)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor=fig.get_facecolor(), metadata=PNG_METADATA)
    return buf.getvalue()


class Panel:
    """A rectangle of the figure in unit coordinates, for text and boxes (cards, side panels).

    Artists go on the figure itself: an Axes per panel would cost more than the text it holds.
    """

    def __init__(self, fig: Figure, rect: Sequence[float]):
        from matplotlib.transforms import Affine2D

        self.fig = fig
        self.x0, self.y0, self.w, self.h = rect
        self.transform = Affine2D().scale(self.w, self.h).translate(self.x0, self.y0) + fig.transFigure

    def text(self, x: float, y: float, s: str, clip_on: bool = False, **kw):
        return self.fig.text(self.x0 + x * self.w, self.y0 + y * self.h, s, **kw)

    def add_patch(self, patch):
        patch.set_transform(self.transform)
        return self.fig.add_artist(patch)


def text_axes(fig: Figure, rect: Sequence[float]) -> Panel:
    """A panel in unit coordinates with nothing drawn: for cards and side panels."""
    return Panel(fig, rect)


@dataclass(frozen=True)
class Row:
    """One line of a card: a label, the spec keys it shows (for marking) and its value.

    ``bar`` = (value, lo, hi) draws the value on a scale; ``span`` = (a, b, lo, hi) a range.
    """

    label: str
    keys: tuple[str, ...]
    value: str
    bar: tuple[float, float, float] | None = None
    span: tuple[float, float, float, float] | None = None
    bad: bool | None = None  # set when the preview knows better than the keys (one layer of several)


def draw_rows(ax, rows: Sequence[Row], marks: Marks, top: float = 0.97, step: float | None = None,
              label_w: float = 0.34, fontsize: float = 10) -> float:
    """Rows top-down in unit axes; rows whose keys a failed skill reads are red on pink.

    Returns the y below the last row.
    """
    step = step or min(0.075, 0.9 / max(len(rows), 1))
    y = top
    for row in rows:
        bad = marks.marked(*row.keys) if row.bad is None else row.bad
        if bad:
            ax.add_patch(_rect((0.0, y - step * 0.85), 1.0, step * 0.9, FAIL_BG))
            ax.text(0.005, y - step * 0.4, "✗", color=FAIL_RED, fontsize=fontsize, va="center",
                    fontweight="bold")
        ax.text(0.06, y - step * 0.4, row.label, color=FAIL_RED if bad else MUTED, fontsize=fontsize,
                va="center")
        x0 = label_w
        if row.bar is not None or row.span is not None:
            _draw_scale(ax, row, x0, y - step * 0.4, bad)
            x0 = label_w + 0.34
        # Spec names are snake_case; a sheet reads "thick fur", not "thick_fur".
        ax.text(x0, y - step * 0.4, row.value.replace("_", " "), color=FAIL_RED if bad else INK, fontsize=fontsize,
                va="center", fontweight="bold" if bad else "normal", clip_on=True)
        y -= step
    return y


def _rect(xy, w, h, color, **kw):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, facecolor=color, edgecolor="none", **kw)


def _draw_scale(ax, row: Row, x0: float, y: float, bad: bool) -> None:
    width, height = 0.3, 0.022
    ax.add_patch(_rect((x0, y - height / 2), width, height, "#e6e3dc"))
    colour = FAIL_RED if bad else "#4a7fb5"
    if row.bar is not None:
        value, lo, hi = row.bar
        frac = 0.0 if hi <= lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)
        ax.add_patch(_rect((x0, y - height / 2), width * frac, height, colour))
    elif row.span is not None:
        a, b, lo, hi = row.span
        fa = 0.0 if hi <= lo else min(max((a - lo) / (hi - lo), 0.0), 1.0)
        fb = 0.0 if hi <= lo else min(max((b - lo) / (hi - lo), 0.0), 1.0)
        fa, fb = min(fa, fb), max(fa, fb)
        ax.add_patch(_rect((x0 + width * fa, y - height / 2), max(width * (fb - fa), 0.004), height, colour))


def footer(fig: Figure, marks: Marks, notes: Iterable[str], y: float = 0.01, height: float = 0.14,
           fontsize: float = 8) -> None:
    """The verdict line and reading notes at the bottom of an image."""
    ax = text_axes(fig, (0.01, y, 0.98, height))
    lines: list[str] = []
    for f in marks.failures[:3]:
        lines.append(f"✗ {f.skill}: {clip(f.reason, 90)}")
    if len(marks.failures) > 3:
        lines.append(f"✗ … and {len(marks.failures) - 3} more failures")
    for note in list(dict.fromkeys(notes))[:2]:
        lines.append(f"note: {clip(note, 100)}")
    if not lines:
        return
    for i, line in enumerate(lines[:5]):
        ax.text(0.0, 1.0 - (i + 0.5) / 5, line, fontsize=fontsize, va="center",
                color=FAIL_RED if line.startswith("✗") else MUTED)


def title(fig: Figure, text: str, subtitle: str = "", marks: Marks | None = None,
          keys: tuple[str, ...] = ()) -> None:
    bad = marks is not None and keys and marks.marked(*keys)
    fig.text(0.02, 0.965, clip(text, 60), fontsize=14, fontweight="bold", va="top",
             color=FAIL_RED if bad else INK)
    if subtitle:
        fig.text(0.02, 0.905, clip(subtitle, 100), fontsize=9, va="top", color=MUTED)


# ----------------------------------------------------------------------------------------------
# Cards


def card_png(heading: str, subtitle: str, rows: Sequence[Row], marks: Marks, notes: Iterable[str],
             heading_keys: tuple[str, ...] = (), width: int = 560, height: int = 420) -> bytes:
    """A designer's sheet: a heading, labelled rows (scales for numbers), the verdict at the foot."""
    fig = new_figure(width, height)
    title(fig, heading, subtitle, marks, heading_keys)
    ax = text_axes(fig, (0.02, 0.17, 0.96, 0.70))
    draw_rows(ax, rows, marks, step=min(0.09, 0.98 / max(len(rows), 1)),
              fontsize=10 if len(rows) <= 12 else 8.5)
    footer(fig, marks, notes)
    return to_png(fig)


def unreadable_png(model_type: str, reason: str) -> bytes:
    """The clear 'cannot read this spec' image."""
    fig = new_figure(480, 270)
    fig.patch.set_facecolor("#eeeeee")
    ax = text_axes(fig, (0, 0, 1, 1))
    ax.add_patch(_rect((0.04, 0.08), 0.92, 0.84, "#ffffff", linewidth=0))
    ax.text(0.5, 0.72, "unreadable spec", ha="center", va="center", fontsize=22, fontweight="bold",
            color=FAIL_RED)
    ax.text(0.5, 0.55, clip(model_type, 40), ha="center", va="center", fontsize=12, color=MUTED)
    wrapped = textwrap.wrap(clip(reason, 180), 52)[:3]
    for i, line in enumerate(wrapped):
        ax.text(0.5, 0.38 - i * 0.09, line, ha="center", va="center", fontsize=10, color=INK)
    return to_png(fig)


def generic_rows(spec: dict[str, Any], skill_keys: dict[str, tuple[str, ...]] | None = None,
                 limit: int = 14) -> list[Row]:
    """Every top-level key as a row; numbers in 0-1 get a scale (a fallback for any model type)."""
    rows: list[Row] = []
    for key, value in list(spec.items())[:limit]:
        x = finite(value)
        bar = (x, 0.0, 1.0) if x is not None and 0 <= x <= 1 else None
        if isinstance(value, list):
            text = ", ".join(clip(v, 24) for v in value[:MAX_ITEMS])
        elif isinstance(value, dict):
            text = ", ".join(f"{clip(k, 16)} {clip(v, 10)}" for k, v in list(value.items())[:6])
        else:
            text = clip(value)
        rows.append(Row(clip(str(key), 22), (str(key),), clip(text, 60), bar=bar))
    return rows
