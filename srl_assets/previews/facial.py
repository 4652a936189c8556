"""Facial preview: a front-view face driven by the spec's ARKit blendshape weights.

ARKit names sides from the subject's point of view, so ``...Left`` moves the half of the face on
the viewer's right (x > 0 here). Each feature reads the blendshapes of its FACS action units
(see ../shared/reference/facs_arkit.yaml): brows (AU1 browInnerUp, AU2 browOuterUp, AU4
browDown), lids (AU5 eyeWide, AU7 eyeSquint, AU43 eyeBlink, AU6 cheekSquint), gaze (AU61-64
eyeLook*), nose (AU9 noseSneer), mouth corners (AU12 mouthSmile, AU15 mouthFrown, AU20
mouthStretch, AU14 mouthDimple), lips (AU10 mouthUpperUp, AU16 mouthLowerDown, AU23 mouthPress,
AU18 mouthPucker, AU22 mouthFunnel, AU28 mouthRoll*, AU17 mouthShrugLower) and the jaw (AU26
jawOpen). The face is drawn from blendshapes only (what an engine animates); the coded AUs are
listed beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.patches import Ellipse, Polygon

from srl_assets.previews.common import (FAIL_RED, INK, Marks, Reader, Row, clip, draw_rows, finite, footer,
                                        new_figure, text_axes, title, to_png)

SKILL_KEYS: dict[str, dict[str, tuple[str, ...]]] = {"facial": {
    "action_units": ("emotion", "action_units"),
    "au_intensity": ("intensity", "action_units"),
    "blendshape_mapping": ("blendshapes",),
    "blendshape_weights": ("blendshapes",),
    "laterality": ("action_units", "blendshapes"),
    "gaze": ("action_units", "blendshapes"),
    "body_language": ("posture", "gesture"),
}}

WIDTH, HEIGHT = 560, 420
#: where the face is drawn: figure fraction (left, bottom, width, height) and its data limits.
FACE_AXES = (0.0, 0.12, 0.5, 0.78)
FACE_XLIM, FACE_YLIM = (-1.3, 1.3), (-1.7, 1.45)
#: the mouth region in data coordinates (x0, y0, x1, y1), for tests and tools.
MOUTH_BOX = (-0.75, -1.2, 0.75, -0.2)
MOUTH_Y = -0.6
SKIN, SKIN_EDGE, HAIR, BROW = "#f2cfae", "#9b6a4a", "#5a3b28", "#4a3121"
LIP, MOUTH_IN, TEETH = "#b8545e", "#5e1a22", "#fbf7ef"
SIDES = (("Left", 1.0), ("Right", -1.0))


def mouth_box_px() -> tuple[int, int, int, int]:
    """The mouth region as pixel bounds (left, top, right, bottom) of the PNG, origin top-left."""
    left, bottom, w, h = FACE_AXES
    (x0, y0, x1, y1), (xl, xh), (yl, yh) = MOUTH_BOX, FACE_XLIM, FACE_YLIM
    # Equal aspect: matplotlib shrinks the axes box to the data aspect, centred in its slot.
    box_w, box_h = w * WIDTH, h * HEIGHT
    scale = min(box_w / (xh - xl), box_h / (yh - yl))
    cx, cy = left * WIDTH + box_w / 2, bottom * HEIGHT + box_h / 2
    px = lambda x: cx + (x - (xl + xh) / 2) * scale  # noqa: E731
    py = lambda y: HEIGHT - (cy + (y - (yl + yh) / 2) * scale)  # noqa: E731
    return int(px(x0)), int(py(y1)), int(px(x1)), int(py(y0))


def _weights(r: Reader) -> dict[str, float]:
    """Blendshape name -> weight in [0, 1] (non-numbers skipped, out-of-range clamped)."""
    raw = r.mapping("blendshapes")
    out: dict[str, float] = {}
    bad: list[str] = []
    for name, value in list(raw.items())[:200]:
        x = finite(value)
        if x is None:
            bad.append(clip(name, 20))
            continue
        out[str(name)] = min(max(x, 0.0), 1.0)
        if not 0 <= x <= 1:
            r.notes.append(f"{clip(name, 24)} weight {x:g} is outside 0-1; drawn clamped")
    if bad:
        r.notes.append(f"blendshape weights that are not numbers: {', '.join(bad[:3])}")
    if len(raw) > 200:
        r.notes.append(f"{len(raw)} blendshapes; the first 200 are read")
    return out


def render_facial(spec: dict[str, Any], marks: Marks) -> tuple[bytes, None]:
    from srl_assets.previews import Unreadable

    r = Reader(spec)
    if not {"blendshapes", "action_units", "emotion"} & set(spec):
        raise Unreadable("no blendshapes, action_units or emotion in the spec")
    w = _weights(r)
    fig = new_figure(WIDTH, HEIGHT)
    emotion = r.text("emotion", "face")
    intensity = r.text("intensity", "")
    title(fig, emotion.capitalize() + (f" · intensity {intensity}" if intensity else ""), "", marks,
          ("emotion", "intensity"))
    ax = fig.add_axes(FACE_AXES)
    ax.set_xlim(*FACE_XLIM)
    ax.set_ylim(*FACE_YLIM)
    ax.set_aspect("equal")
    ax.axis("off")
    _draw_face(ax, w)
    if marks.marked("blendshapes"):
        ax.add_patch(Ellipse((0, -0.05), 2.35, 2.85, fill=False, edgecolor=FAIL_RED, linewidth=2,
                             linestyle="--"))

    codes = r.items("action_units", limit=16)
    rows = [
        Row("action units", ("action_units",), clip(" ".join(clip(c, 6) for c in codes) or "–", 44)),
        Row("posture", ("posture",), r.text("posture", "–")),
        Row("gesture", ("gesture",), r.text("gesture", "–")),
    ]
    active = sorted(((v, k) for k, v in w.items() if v > 0), key=lambda t: (-t[0], t[1]))
    for v, k in active[:9]:
        rows.append(Row(clip(k, 20), ("blendshapes",), f"{v:.2f}", bar=(v, 0.0, 1.0)))
    if len(active) > 9:
        rows.append(Row("", ("blendshapes",), f"+{len(active) - 9} more blendshapes"))
    panel = text_axes(fig, (0.5, 0.16, 0.49, 0.74))
    draw_rows(panel, rows, marks, step=0.075, label_w=0.42, fontsize=8.5)
    footer(fig, marks, r.notes, height=0.13)
    return to_png(fig), None


def _g(w: dict[str, float], name: str) -> float:
    return w.get(name, 0.0)


def _draw_face(ax, w: dict[str, float]) -> None:
    jaw = _g(w, "jawOpen")
    chin_drop = 0.28 * jaw
    # Head and hair: a hair cap behind the face ellipse shows as a hairline and crown.
    ax.add_patch(Ellipse((0, 0.2), 2.05, 2.45, facecolor=HAIR, edgecolor="none"))
    for s in (1, -1):
        ax.add_patch(Ellipse((s * 0.98, -0.05), 0.24, 0.42, facecolor=SKIN, edgecolor=SKIN_EDGE, linewidth=1.2))
    ax.add_patch(Ellipse((0, -0.12 - chin_drop / 2), 1.9, 2.45 + chin_drop, facecolor=SKIN, edgecolor=SKIN_EDGE,
                         linewidth=1.5))
    fringe = np.array([[-0.93, 0.45], [-0.7, 0.95], [-0.2, 1.1], [0.35, 1.08], [0.8, 0.9], [0.94, 0.45],
                       [0.75, 0.78], [0.3, 0.86], [-0.25, 0.84], [-0.7, 0.72]])
    ax.add_patch(Polygon(fringe, closed=True, facecolor=HAIR, edgecolor="none"))

    for side, s in SIDES:
        _eye(ax, w, side, s)
        _brow(ax, w, side, s)
        cheek = _g(w, f"cheekSquint{side}")
        if cheek > 0.05:  # AU6 raises the cheek: a crease under the lower lid
            t = np.linspace(-1, 1, 20)
            ax.plot(s * 0.42 + 0.16 * t, 0.05 - 0.05 * (1 - t**2) * cheek - 0.04 * cheek, color=SKIN_EDGE,
                    linewidth=1 + 1.5 * cheek, solid_capstyle="round")
    _nose(ax, w)
    _mouth(ax, w, jaw)


def _eye(ax, w: dict[str, float], side: str, s: float) -> None:
    cx, cy = s * 0.42, 0.25
    open_ = 1 + 0.9 * _g(w, f"eyeWide{side}") - 0.97 * _g(w, f"eyeBlink{side}") \
        - 0.45 * _g(w, f"eyeSquint{side}") - 0.3 * _g(w, f"cheekSquint{side}")
    h = 0.2 * max(open_, 0.03)
    white = Ellipse((cx, cy), 0.36, h, facecolor="white", edgecolor=INK, linewidth=1.3, zorder=3)
    ax.add_patch(white)
    # Gaze: ...Out moves the eye away from the nose, ...In towards it.
    dx = 0.09 * s * (_g(w, f"eyeLookOut{side}") - _g(w, f"eyeLookIn{side}"))
    dy = 0.06 * (_g(w, f"eyeLookUp{side}") - _g(w, f"eyeLookDown{side}"))
    if h > 0.025:
        iris = Ellipse((cx + dx, cy + dy), 0.15, 0.15, facecolor="#5b7fa3", edgecolor="#2c3e50", zorder=4)
        pupil = Ellipse((cx + dx, cy + dy), 0.065, 0.065, facecolor="#111111", zorder=5)
        for p in (iris, pupil):
            ax.add_patch(p)
            p.set_clip_path(white)
    # Upper lid line, heavier when tightened (AU7).
    t = np.linspace(-1, 1, 24)
    ax.plot(cx + 0.18 * t, cy + h / 2 * np.sqrt(np.clip(1 - t**2, 0, 1)), color=INK,
            linewidth=1.8 + 1.5 * _g(w, f"eyeSquint{side}"), zorder=6)


def _brow(ax, w: dict[str, float], side: str, s: float) -> None:
    inner_up, outer_up, down = _g(w, "browInnerUp"), _g(w, f"browOuterUp{side}"), _g(w, f"browDown{side}")
    base = 0.52
    inner = (s * (0.16 - 0.05 * down), base + 0.2 * inner_up - 0.17 * down)
    outer = (s * 0.66, base + 0.06 + 0.2 * outer_up - 0.03 * down + 0.03 * inner_up)
    mid = (s * 0.42, (inner[1] + outer[1]) / 2 + 0.05 + 0.06 * outer_up - 0.03 * down)
    t = np.linspace(0, 1, 20)[:, None]
    pts = (1 - t) ** 2 * np.array(inner) + 2 * (1 - t) * t * np.array(mid) + t**2 * np.array(outer)
    ax.plot(pts[:, 0], pts[:, 1], color=BROW, linewidth=6, solid_capstyle="round", zorder=6)
    if down > 0.3 and s > 0:  # AU4 draws the brows together: a vertical crease between them
        ax.plot([0.03, 0.03], [base - 0.1, base + 0.02], color=SKIN_EDGE, linewidth=1 + down)
        ax.plot([-0.03, -0.03], [base - 0.1, base + 0.02], color=SKIN_EDGE, linewidth=1 + down)


def _nose(ax, w: dict[str, float]) -> None:
    sneer = (_g(w, "noseSneerLeft") + _g(w, "noseSneerRight")) / 2
    lift = 0.06 * sneer
    ax.plot([0.02, 0.08, 0.0], [0.25, -0.12 + lift, -0.2 + lift], color=SKIN_EDGE, linewidth=1.6)
    for side, s in SIDES:
        up = 0.08 * _g(w, f"noseSneer{side}")
        ax.plot([s * 0.05, s * 0.15, s * 0.19], [-0.22 + lift, -0.2 + up, -0.12 + up], color=SKIN_EDGE,
                linewidth=1.6)
    if sneer > 0.1:  # AU9 wrinkles the bridge
        for dy in (0.08, 0.13):
            ax.plot([-0.1, 0.1], [dy, dy], color=SKIN_EDGE, linewidth=0.6 + 1.5 * sneer)


def _mouth(ax, w: dict[str, float], jaw: float) -> None:
    def both(name: str) -> float:
        return (_g(w, name + "Left") + _g(w, name + "Right")) / 2

    pucker, funnel = _g(w, "mouthPucker"), _g(w, "mouthFunnel")
    shift = 0.12 * (_g(w, "mouthLeft") - _g(w, "mouthRight"))
    corners = {}
    for side, s in SIDES:
        half = 0.33 + 0.1 * _g(w, f"mouthSmile{side}") + 0.16 * _g(w, f"mouthStretch{side}") \
            + 0.06 * _g(w, f"mouthDimple{side}") - 0.14 * pucker - 0.1 * funnel - 0.04 * _g(w, f"mouthPress{side}")
        y = MOUTH_Y + 0.2 * _g(w, f"mouthSmile{side}") - 0.18 * _g(w, f"mouthFrown{side}") \
            - 0.04 * _g(w, f"mouthStretch{side}") + 0.03 * _g(w, f"mouthDimple{side}")
        corners[s] = (shift + s * half, y)
    # A broad smile parts the lips over the teeth (AU12 with AU25 in most real smiles).
    smile = both("mouthSmile")
    centre_top = MOUTH_Y + 0.03 + 0.1 * both("mouthUpperUp") + 0.03 * funnel - 0.02 * smile
    centre_bottom = MOUTH_Y - 0.03 - 0.1 * smile - 0.42 * jaw - 0.12 * both("mouthLowerDown") - 0.08 * funnel \
        + 0.04 * _g(w, "mouthShrugLower")
    t = np.linspace(-1, 1, 41)
    xl, yl = corners[-1]
    xr, yr = corners[1]
    x = xl + (t + 1) / 2 * (xr - xl)
    ends = np.where(t < 0, yl, yr)
    # Lips meet at the corners: a curve through each corner and the lip's centre (|t|^1.6 keeps
    # the corners sharp and the centre flat, so raised corners read as a smile).
    upper = centre_top + (ends - centre_top) * np.abs(t) ** 1.6
    lower = centre_bottom + (ends - centre_bottom) * np.abs(t) ** 1.6
    thin = 1 - 0.6 * max(both("mouthPress"), (_g(w, "mouthRollUpper") + _g(w, "mouthRollLower")) / 2)
    lip = 0.07 * thin
    gap = float(np.max(upper - lower))
    if gap > 0.08:
        ax.add_patch(Polygon(np.c_[np.r_[x, x[::-1]], np.r_[upper, lower[::-1]]], closed=True,
                             facecolor=MOUTH_IN, edgecolor="none", zorder=7))
        if centre_top - centre_bottom > 0.1:  # the upper teeth show in an open mouth
            teeth = np.minimum(upper, np.maximum(upper - 0.07, lower))
            ax.fill_between(x, teeth, upper, color=TEETH, zorder=8, linewidth=0)
        if _g(w, "tongueOut") > 0.1:
            ax.add_patch(Ellipse((shift, centre_bottom + 0.02), 0.3, 0.18 + 0.2 * _g(w, "tongueOut"),
                                 facecolor="#d9707a", zorder=9))
    # Lips as bands along the curves: upper lip above the upper curve, lower lip below the lower.
    ax.fill_between(x, upper, upper + lip * (1 - np.abs(t) ** 2), color=LIP, zorder=10, linewidth=0)
    ax.fill_between(x, lower - lip * 1.3 * (1 - np.abs(t) ** 2), lower, color=LIP, zorder=10, linewidth=0)
    ax.plot(x, upper, color="#6d2630", linewidth=1.6, zorder=11)
    ax.plot(x, lower, color="#6d2630", linewidth=1.2 if gap > 0.08 else 0.0, zorder=11)
    shrug = _g(w, "mouthShrugLower")
    if shrug > 0.1:  # AU17 pushes the chin up: a crease below the lower lip
        ax.plot(shift + 0.18 * t, centre_bottom - 0.2 + 0.03 * (1 - t**2), color=SKIN_EDGE, linewidth=1 + shrug)
