"""Tree preview: an L-system grown with the spec's iterations, angle and length ratio.

The spec gives the L-system's parameters; the renderer picks the grammar from the crown (and the
habit when the crown is unknown), as a forester would sketch it:

* monopodial crowns (conical) keep a leader with laterals at the branching angle; older (lower)
  laterals have grown longer, which gives the cone;
* sympodial crowns (rounded, oval, spreading, flat-topped, weeping) fork, the two children
  ``angle`` apart; weeping bends its shoots down, flat-topped lifts its crown on a bare trunk;
* a palm is a bare stem with drooping fronds (iterations = rings of fronds).

Each bracket level scales segment length by ``length_ratio``. Twigs jitter a little (seeded from
the spec), so the tree does not look machine-made but draws the same every time. The drawing is
scaled to ``height_m`` (metres on the axis, a 1.8 m figure for scale) with the trunk
``trunk_diameter_m`` thick, and leaves in the ``foliage`` colour (none when ``bare``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.collections import EllipseCollection, LineCollection
from matplotlib.colors import to_rgb

from srl_assets.previews.common import (shown, Marks, Reader, Row, clip, draw_rows, footer, new_figure, spec_seed,
                                        text_axes, title, to_png)

SKILL_KEYS: dict[str, dict[str, tuple[str, ...]]] = {"tree": {
    "species_traits": ("species", "habit", "leaf", "crown"),
    "height_growth": ("age_years", "height_m"),
    "trunk_growth": ("trunk_diameter_m",),
    "branching_angle": ("lsystem.angle_deg",),
    "lsystem_shape": ("lsystem.iterations", "lsystem.length_ratio"),
    "seasonal_foliage": ("season", "foliage"),
}}

WIDTH, HEIGHT = 560, 420
TREE_AXES = (0.07, 0.17, 0.48, 0.7)
MAX_SYMBOLS = 40_000  # an L-system string beyond this stops growing (model output can ask 1e9)
COLOURS = {
    "dark green": "#2f5d2b", "green": "#4e8c38", "light green": "#8cc267", "blue-green": "#3d7a6e",
    "silver-green": "#9db48e", "yellow": "#e6c234", "orange": "#e07a24", "golden": "#d8a01a",
    "brown": "#8b5a2b", "red": "#b5392b", "purple": "#7b3f8c",
}
GROUND = {"spring": "#a9d18e", "summer": "#8dbb6a", "autumn": "#b9a36a", "winter": "#e9eef2"}
BARK = "#5b4030"
FROND = 99  # the depth given to palm frond segments (drawn in the leaf colour, no bark)


@dataclass(frozen=True)
class Grammar:
    axiom: str
    rules: dict[str, str]
    fork: bool          # True: children sit +-angle/2 from the parent; False: laterals at angle
    droop: float        # how strongly shoots bend down per bracket level (weeping, fronds)
    lift: float = 0.0   # how strongly shoots turn up (upright crowns)
    leaf_scale: float = 1.8  # leaf clusters relative to the outer twigs' length
    leaf_from: int = 1  # leaves on twigs of the outer ``leaf_from + 1`` levels (or all along laterals)


GRAMMARS = {
    # The leader grows two half-length internodes a year, each with a whorl of laterals.
    "conical": Grammar("TA", {"A": "G[+B][-B]G[-B][+B]A", "B": "FB"}, fork=False, droop=0.06, leaf_scale=0.7),
    "rounded": Grammar("TX", {"X": "F[+X][-X]"}, fork=True, droop=0.02, lift=0.02),
    "oval": Grammar("TX", {"X": "F[+X]F[-X]X"}, fork=True, droop=0.0, lift=0.05, leaf_scale=1.4, leaf_from=3),
    "spreading": Grammar("TX", {"X": "F[+X][-X]"}, fork=True, droop=0.05),
    "flat_topped": Grammar("TTTX", {"X": "F[+X][-X]"}, fork=True, droop=0.12),
    "weeping": Grammar("TTX", {"X": "F[+X][-X]"}, fork=True, droop=0.45, leaf_scale=0.8, leaf_from=2),
    "palm": Grammar("TTTTTP", {}, fork=True, droop=0.12, leaf_scale=0.6),
}


def render_tree(spec: dict[str, Any], marks: Marks) -> tuple[bytes, None]:
    from srl_assets.previews import Unreadable

    if not {"lsystem", "crown", "height_m", "species", "foliage"} & set(spec):
        raise Unreadable("no lsystem, crown, height_m, species or foliage in the spec")
    r = Reader(spec)
    ls = r.mapping("lsystem")
    iterations = int(round(r.num("iterations", 5, 1, 9, node=ls, label="lsystem.iterations")))
    angle = r.num("angle_deg", 45, 0, 180, node=ls, label="lsystem.angle_deg")
    ratio = r.num("length_ratio", 0.75, 0.3, 0.95, node=ls, label="lsystem.length_ratio")
    height = r.num("height_m", 15, 0.1, 150)
    trunk = r.num("trunk_diameter_m", 0.5, 0.005, 20)
    crown, habit, leaf = r.text("crown").lower(), r.text("habit").lower(), r.text("leaf").lower()
    season, foliage = r.text("season").lower(), r.text("foliage").lower()
    grammar = GRAMMARS.get(crown) or (GRAMMARS["conical"] if habit == "evergreen" else GRAMMARS["rounded"])
    if crown not in GRAMMARS:
        r.notes.append(f"crown {crown or '(none)'!r} is not one the renderer knows; drawn "
                       f"{'conical' if grammar is GRAMMARS['conical'] else 'rounded'}")
    leaf_colour = _colour(foliage, r)

    rng = np.random.default_rng(spec_seed(spec))
    segs, depths, tips = _grow(grammar, iterations, angle, ratio, rng, r)
    segs, tips = _fit(segs, tips, height)

    fig = new_figure(WIDTH, HEIGHT)
    name = r.text("species", "tree").replace("_", " ")
    sub = ", ".join(x for x in (habit, leaf, crown.replace("_", "-") + " crown" if crown else "", season) if x)
    title(fig, name.capitalize(), sub, marks, ("species",))
    ax = fig.add_axes(TREE_AXES)
    top = max(height * 1.08, 2.2)
    ax_w, ax_h = TREE_AXES[2] * WIDTH, TREE_AXES[3] * HEIGHT
    half = max(top * ax_w / ax_h / 2, float(np.abs(segs[:, :, 0]).max()) * 1.1 if len(segs) else 1.0)
    top = max(top, half * 2 * ax_h / ax_w)
    ax.set_xlim(-half, half)
    ax.set_ylim(-top * 0.04, top)
    ax.set_facecolor("#f4f7fb")
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.set_ylabel("m", fontsize=8, rotation=0)
    ax.set_xticks([])
    ax.axhspan(-top * 0.04, 0, color=GROUND.get(season, "#b8c4a0"), zorder=0)
    pt_per_m = ax_h / (top * 1.04) * 72 / 80  # points per metre on this axis
    _person(ax, -half * 0.82, pt_per_m)

    # Thinner with each level (a pipe-model-like taper), and never thinner than a hairline.
    fronds = depths == FROND
    taper = 1 - 0.75 * np.clip(segs[:, :, 1].mean(axis=1) / height, 0, 1) if len(segs) else 1.0
    widths = np.maximum(trunk * pt_per_m * 0.6 ** np.where(fronds, 3, depths) * taper, 0.5)
    colours = [leaf_colour or BARK if f else BARK for f in fronds]
    ax.add_collection(LineCollection(segs, linewidths=np.where(fronds, 2.5, widths), colors=colours,
                                     capstyle="round", zorder=2))
    if leaf_colour is not None and len(tips):
        twig = float(np.median(np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)[depths >= depths.max() - 1]))
        size = max(twig * grammar.leaf_scale, height * 0.015)
        n = len(tips)
        jitter = rng.normal(0, size * 0.25, (n, 2))
        sizes = size * rng.uniform(0.7, 1.3, n)
        shades = np.clip(np.array(leaf_colour) * rng.uniform(0.85, 1.12, (n, 1)), 0, 1)
        ax.add_collection(EllipseCollection(sizes, sizes * 0.8, rng.uniform(0, 180, n), units="xy",
                                            offsets=tips + jitter, offset_transform=ax.transData,
                                            facecolors=shades, edgecolors="none", alpha=0.85, zorder=3))
    if leaf_colour is not None and grammar is GRAMMARS["weeping"] and len(tips):
        # Weeping: leafy shoots hang from the crown like a curtain.
        ends = tips[::2]
        drop = height * rng.uniform(0.12, 0.3, len(ends))
        lower = np.maximum(ends[:, 1] - drop, height * 0.08)
        strands = np.stack([ends, np.c_[ends[:, 0], lower]], axis=1)
        ax.add_collection(LineCollection(strands, linewidths=1.0, colors=[leaf_colour], alpha=0.8, zorder=3))
    if marks.marked("height_m", "lsystem.iterations", "lsystem.length_ratio", "lsystem.angle_deg",
                    "foliage", "trunk_diameter_m"):
        ax.axhline(height, color="#c62828", linestyle="--", linewidth=1)

    rows = [
        Row("species", ("species",), clip(name, 30)),
        Row("habit / leaf", ("habit", "leaf"), f"{habit or '–'} / {leaf or '–'}"),
        Row("crown", ("crown",), crown or "–"),
        Row("age", ("age_years",), shown(spec.get("age_years"), " years")),
        Row("height", ("height_m",), shown(spec.get("height_m"), " m")),
        Row("trunk", ("trunk_diameter_m",), shown(spec.get("trunk_diameter_m"), " m")),
        Row("iterations", ("lsystem.iterations",), shown(ls.get("iterations"))),
        Row("angle", ("lsystem.angle_deg",), shown(ls.get("angle_deg"), "°")),
        Row("length ratio", ("lsystem.length_ratio",), shown(ls.get("length_ratio"))),
        Row("season", ("season",), season or "–"),
        Row("foliage", ("foliage",), foliage or "–"),
    ]
    panel = text_axes(fig, (0.6, 0.17, 0.39, 0.7))
    draw_rows(panel, rows, marks, step=0.085, label_w=0.42, fontsize=9)
    footer(fig, marks, r.notes, height=0.13)
    return to_png(fig), None


def _colour(name: str, r: Reader) -> tuple[float, float, float] | None:
    if name == "bare":
        return None
    if name in COLOURS:
        return to_rgb(COLOURS[name])
    try:
        return to_rgb(name.replace(" ", "").replace("-", ""))
    except ValueError:
        r.notes.append(f"foliage colour {name or '(none)'!r} is unknown; leaves drawn grey-green")
        return to_rgb("#7f9276")


def _expand(grammar: Grammar, iterations: int, r: Reader) -> str:
    s = grammar.axiom
    if not grammar.rules:  # the palm: rings of fronds instead of rewriting
        fronds = 4 + 3 * iterations
        ring = "".join(f"[+{i}]" for i in range(fronds))
        return s.replace("P", ring)
    for i in range(iterations):
        nxt = "".join(grammar.rules.get(ch, ch) for ch in s)
        if len(nxt) > MAX_SYMBOLS:
            r.notes.append(f"the L-system stops at {i} of {iterations} iterations (too many branches to draw)")
            break
        s = nxt
    return s


def _grow(grammar: Grammar, iterations: int, angle_deg: float, ratio: float, rng: np.random.Generator,
          r: Reader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turtle over the expanded string: segments (n, 2, 2), their bracket depth, the tip points."""
    s = _expand(grammar, iterations, r)
    turn = math.radians(angle_deg) / (2 if grammar.fork else 1)
    # Draw all jitter at once: one scalar draw per symbol would dominate the time.
    jitter = rng.uniform(0.85, 1.15, len(s) + 1).tolist()
    x, y, heading, depth = 0.0, 0.0, math.pi / 2, 0
    stack: list[tuple[float, float, float, int]] = []
    segs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    depths: list[int] = []
    tips: list[tuple[float, float]] = []
    palm = not grammar.rules
    seg_len = {"T": 1.6, "F": 1.0, "G": 0.5}
    drew_since_push = False
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in seg_len:
            length = seg_len[ch] * ratio ** depth * jitter[i]
            if palm:  # a palm stem leans a little
                heading += (jitter[i] - 1) * 0.15
            pieces = 4 if ch == "T" else 1  # the trunk in short pieces, so its taper is smooth
            for _ in range(pieces):
                nx = x + length / pieces * math.cos(heading)
                ny = y + length / pieces * math.sin(heading)
                segs.append(((x, y), (nx, ny)))
                depths.append(depth)
                x, y = nx, ny
            heading = _tropism(heading, grammar, depth)
            drew_since_push = True
        elif ch == "+" or ch == "-":
            heading += (1 if ch == "+" else -1) * turn * jitter[i]
        elif ch == "[":
            stack.append((x, y, heading, depth))
            depth += 1
            drew_since_push = False
        elif ch == "]":
            if drew_since_push:
                tips.append((x, y))
            x, y, heading, depth = stack.pop()
            drew_since_push = False
        elif ch.isdigit() and palm:  # frond k of the ring: spread from -140 to +140 degrees
            j = i
            while j + 1 < len(s) and s[j + 1].isdigit():
                j += 1
            k, n = int(s[i:j + 1]), s.count("[")
            heading = math.pi / 2 + math.radians(-140 + 280 * k / max(n - 1, 1)) + (jitter[i] - 1) * 0.3
            for _ in range(7):  # a frond: drooping segments, leaflets at each joint
                nx, ny = x + 0.5 * math.cos(heading), y + 0.5 * math.sin(heading)
                segs.append(((x, y), (nx, ny)))
                depths.append(FROND)
                tips.append((nx, ny))
                x, y = nx, ny
                heading = _tropism(heading, grammar, 1)
            drew_since_push = False
            i = j
        i += 1
    if drew_since_push:
        tips.append((x, y))
    deepest = max(depths, default=0)
    if grammar is GRAMMARS["conical"]:  # needles all along every lateral
        for (a, b), d in zip(segs, depths):
            if d >= 1:
                tips += [(a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f) for f in (0.35, 0.7, 1.0)]
        tips.append(segs[-1][1] if segs else (0.0, 0.0))
    elif not palm:  # leaves on the outer levels of twigs
        for (a, b), d in zip(segs, depths):
            if d >= max(deepest - grammar.leaf_from, 1):
                tips += [b, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)]
    return np.array(segs, dtype=float).reshape(-1, 2, 2), np.array(depths, dtype=float), \
        np.array(tips, dtype=float).reshape(-1, 2)


def _tropism(heading: float, grammar: Grammar, depth: int) -> float:
    """Bend a shoot: down (gravity, stronger on thin shoots) and up (phototropism)."""
    down = grammar.droop * depth
    # Pull the heading towards straight down (-pi/2), by at most the angle between them.
    diff = (-math.pi / 2 - heading + math.pi) % (2 * math.pi) - math.pi
    heading += max(-abs(diff), min(abs(diff), diff * min(down, 1.0)))
    up = (math.pi / 2 - heading + math.pi) % (2 * math.pi) - math.pi
    return heading + up * grammar.lift


def _fit(segs: np.ndarray, tips: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale so the highest point is ``height`` metres and the trunk's foot stands at 0."""
    if not len(segs):
        return segs, tips
    top = float(max(segs[:, :, 1].max(), tips[:, 1].max() if len(tips) else 0.0))
    scale = height / top if top > 0 else 1.0
    return segs * scale, tips * scale


def _person(ax, x: float, pt_per_m: float) -> None:
    """A 1.8 m figure for scale."""
    ax.plot([x, x], [0, 1.05], color="#555555", linewidth=max(0.25 * pt_per_m, 0.6), solid_capstyle="butt")
    ax.add_collection(EllipseCollection([0.3], [0.3], [0], units="xy", offsets=[(x, 1.55)],
                                        offset_transform=ax.transData, facecolors="#555555"))
    ax.plot([x, x], [1.05, 1.4], color="#555555", linewidth=max(0.35 * pt_per_m, 0.8))
