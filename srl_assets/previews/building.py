"""Building preview: a floor plan per floor and a front elevation with the roof and material.

Plan layout (the spec gives areas, not coordinates, so the renderer places the rooms): the
footprint is a 3:2 rectangle of the spec's ``footprint`` area. On floor 1 the hub (the room the
street door opens to) is a band along the front; the stairs and the other ground rooms are
columns behind it, each as wide as its area needs, so every room joins the hub. Upper floors
keep the stairs above the ground-floor stairs and put a landing in front; rooms that do not fit
behind spill into the front band. Rooms are drawn at their areas; free floor is hatched; rooms
that overflow the footprint are shrunk to fit and the plan says by how much. Doors are openings
in the wall two rooms share, or a dashed link when the layout could not put them side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matplotlib.patches import Ellipse, Polygon, Rectangle

from srl_assets.previews.common import (shown, FAIL_RED, INK, MUTED, Marks, Reader, Row, clip, draw_rows, finite,
                                        footer, new_figure, text_axes, title, to_png)

SKILL_KEYS: dict[str, dict[str, tuple[str, ...]]] = {"building": {
    "culture_style": ("style", "roof", "material"),
    "biome_climate": ("roof", "material"),
    "function_rooms": ("rooms",),
    "floor_area": ("floors", "footprint"),
    "stairs": ("stairs",),
    "door_connectivity": ("doors",),
}}

WIDTH, HEIGHT = 640, 480
ENTRANCE, STAIRS = "out", "stairs"  # the names rules/building.yaml gives the street and the stairs
MAX_ROOMS, MAX_DOORS, MAX_PLANS = 40, 60, 3
STOREY_M = 3.0
ROOM_COLOURS = ("#f6e7c8", "#dbe9d4", "#d9e4f1", "#f1dde3", "#e8e1f3", "#f3ecd0", "#dcefee")
WALLS = {
    "timber": ("#b07a4a", "|"), "stone": ("#a7a39c", "o"), "turf": ("#7e8f4e", "."),
    "brick": ("#b4533c", "-"), "stucco": ("#efe3c8", ""), "plaster": ("#f4efe6", ""),
    "adobe": ("#c99a6b", ""), "bamboo": ("#c8b46a", "|"), "thatch": ("#d8b96a", "/"),
}
ROOF_COLOUR = {"thatch": "#cfa94f", "turf": "#6f8a3c"}


@dataclass
class Box:
    name: str
    x: float
    y: float
    w: float
    h: float
    area: float  # as the spec gives it (the box may be shrunk to fit)
    kind: str = "room"  # room | stairs | free | landing

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


def render_building(spec: dict[str, Any], marks: Marks) -> tuple[bytes, None]:
    from srl_assets.previews import Unreadable

    if not {"rooms", "footprint", "floors", "roof", "material"} & set(spec):
        raise Unreadable("no rooms, footprint, floors, roof or material in the spec")
    r = Reader(spec)
    rooms = _rooms(r)
    floors = int(r.num("floors", max([f for _, _, f in rooms], default=1), 1, 12))
    totals = [sum(a for _, a, f in rooms if f == k) for k in range(1, floors + 1)]
    footprint = r.num("footprint", max(totals + [20.0]), 1, 100_000)
    doors = _doors(r)

    fig = new_figure(WIDTH, HEIGHT)
    style, roof, material = r.text("style", "–"), r.text("roof", "").lower(), r.text("material", "").lower()
    title(fig, f"{style.capitalize()} · {floors} floor{'s' if floors != 1 else ''}",
          f"{roof or '?'} roof, {material or '?'} walls, footprint {footprint:g} m²", marks, ("style",))

    width = math.sqrt(footprint * 1.5)
    depth = footprint / width
    plans = _layout(rooms, doors, floors, width, depth, r)
    n_plans = min(floors, MAX_PLANS)
    if floors > MAX_PLANS:
        r.notes.append(f"{floors} floors; plans of the first {MAX_PLANS} are drawn")
    slot = 0.96 / n_plans
    for k in range(n_plans):
        ax = fig.add_axes((0.02 + k * slot, 0.47, slot - 0.02, 0.38))
        _plan(ax, k + 1, plans.get(k + 1, []), doors, width, depth, marks)
    ax = fig.add_axes((0.04, 0.15, 0.42, 0.29))
    _elevation(ax, width, floors, roof, material, marks, r)
    rows = [
        Row("style", ("style",), style),
        Row("roof", ("roof",), roof or "–"),
        Row("walls", ("material",), material or "–"),
        Row("floors", ("floors",), shown(spec.get("floors"))),
        Row("footprint", ("footprint",), shown(spec.get("footprint"), " m²")),
        Row("rooms", ("rooms",), f"{len(rooms)} rooms, {sum(a for _, a, _ in rooms):g} m²"),
        Row("doors", ("doors",), f"{len(doors)} doors"),
    ]
    panel = text_axes(fig, (0.52, 0.15, 0.46, 0.29))
    draw_rows(panel, rows, marks, step=0.14, label_w=0.3, fontsize=9)
    footer(fig, marks, r.notes, height=0.13)
    return to_png(fig), None


def _rooms(r: Reader) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    seen: set[str] = set()
    for i, room in enumerate(r.items("rooms", limit=MAX_ROOMS)):
        if not isinstance(room, dict):
            r.notes.append(f"rooms[{i}] is not an object")
            continue
        name = clip(room.get("name"), 24) if isinstance(room.get("name"), str) else f"room {i + 1}"
        area, floor = finite(room.get("area")), finite(room.get("floor"))
        if area is None or area <= 0:
            r.notes.append(f"room {name!r} has no positive area; not drawn")
            continue
        if floor is None or floor != int(floor) or not 1 <= floor <= 12:
            r.notes.append(f"room {name!r} has floor {clip(room.get('floor'), 10)}; drawn on floor 1")
            floor = 1
        if name in seen:
            r.notes.append(f"room name {name!r} is used twice")
        seen.add(name)
        out.append((name, min(area, 100_000.0), int(floor)))
    return out


def _doors(r: Reader) -> list[tuple[str, str]]:
    out = []
    for door in r.items("doors", limit=MAX_DOORS):
        if isinstance(door, list) and len(door) == 2 and all(isinstance(x, str) for x in door):
            out.append((clip(door[0], 24), clip(door[1], 24)))
        else:
            r.notes.append(f"door {clip(door, 30)} is not a pair of room names")
    return out


def _layout(rooms: list[tuple[str, float, int]], doors: list[tuple[str, str]], floors: int, width: float,
            depth: float, r: Reader) -> dict[int, list[Box]]:
    hub = next((b if a == ENTRANCE else a for a, b in doors if ENTRANCE in (a, b)), None)
    ground = [x for x in rooms if x[2] == 1]
    if hub not in {n for n, _, f in ground}:
        hub = ground[0][0] if ground else None
    hub_area = next((a for n, a, f in ground if n == hub), 0.0)
    stairs_area = next((a for n, a, _ in rooms if n == STAIRS), 0.0)
    footprint = width * depth
    plans: dict[int, list[Box]] = {}
    for floor in range(1, floors + 1):
        here = [(n, a) for n, a, f in rooms if f == floor and n not in (hub, STAIRS)]
        total = sum(a for _, a in here) + stairs_area + (hub_area if floor == 1 else 0.0)
        boxes: list[Box] = []
        if floor == 1:
            front = min(hub_area / width, depth * 0.6) if hub else 0.0
            if hub:
                boxes.append(Box(hub, 0, 0, width, front, hub_area))
        else:
            # The landing in front takes the floor's free area: a strip every room opens onto.
            free = footprint - total
            front = min(max(free / width, min(1.2, depth * 0.15)), depth * 0.5)
            boxes.append(Box("landing", 0, 0, width, front, width * front, "landing"))
        back = depth - front
        x = 0.0
        cols = ([(STAIRS, stairs_area, "stairs")] if stairs_area else []) + [(n, a, "room") for n, a in here]
        need = sum(a / back for _, a, _ in cols) if back > 0 else 0.0
        shrink = min(1.0, width / need) if need > 0 else 1.0
        for name, area, kind in cols:
            w = area / back * shrink
            boxes.append(Box(name, x, front, w, back, area, kind))
            x += w
        if x < width - 1e-6:
            boxes.append(Box("free", x, front, width - x, back, (width - x) * back, "free"))
        if total > footprint + 1e-6:
            r.notes.append(f"floor {floor}: rooms exceed the footprint by {total - footprint:.0f} m²; drawn shrunk")
        plans[floor] = boxes
    return plans


def _plan(ax, floor: int, boxes: list[Box], doors: list[tuple[str, str]], width: float, depth: float,
          marks: Marks) -> None:
    ax.set_aspect("equal")
    ax.set_xlim(-width * 0.05, width * 1.05)
    ax.set_ylim(-depth * 0.18, depth * 1.05)
    ax.axis("off")
    ax.set_title(f"floor {floor}", fontsize=9, color=MUTED, pad=2)
    rooms_bad = marks.marked("rooms")
    for i, b in enumerate(boxes):
        face = {"free": "#ffffff", "landing": "#f4f1ec", "stairs": "#e4e0d8"}.get(b.kind, ROOM_COLOURS[i % 7])
        bad = (rooms_bad and b.kind == "room") or (b.kind == "stairs" and marks.marked("stairs"))
        ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, facecolor=face, edgecolor=FAIL_RED if bad else INK,
                               linewidth=2.0 if bad else 1.4, hatch={"free": "//", "stairs": "--"}.get(b.kind, ""),
                               zorder=1))
        label = b.name if b.kind in ("room", "stairs") else b.kind
        size = 6.5 if min(b.w, b.h) > 2.5 else 5.5
        text = f"{clip(label, 14)}\n{b.area:.0f} m²" if b.kind != "landing" else "landing"
        if b.w * b.h > 0.01 * width * depth:
            ax.text(*b.centre, text, ha="center", va="center", fontsize=size,
                    color=FAIL_RED if bad else INK, zorder=5, clip_on=True)
    ax.add_patch(Rectangle((0, 0), width, depth, fill=False, linewidth=2.6, zorder=3,
                           edgecolor=FAIL_RED if marks.marked("footprint") else INK))
    by_name = {b.name: b for b in boxes if b.kind in ("room", "stairs")}
    landing = next((b for b in boxes if b.kind == "landing"), None)
    door_bad = marks.marked("doors")
    gap = min(1.0, width * 0.07, depth * 0.07)
    for a, b in doors:
        if ENTRANCE in (a, b):
            inner = by_name.get(b if a == ENTRANCE else a)
            if inner is not None and inner.y <= 1e-6:
                x = inner.x + inner.w / 2
                _opening(ax, (x - gap, 0), (x + gap, 0), door_bad)
                ax.annotate("", xy=(x, 0), xytext=(x, -depth * 0.15),
                            arrowprops=dict(arrowstyle="->", color=FAIL_RED if door_bad else INK, lw=1.2))
            continue
        ba, bb = by_name.get(a), by_name.get(b)
        if ba is None or bb is None:
            continue  # a door of another floor, or to a room this floor does not have
        shared = _shared_wall(ba, bb)
        if shared is not None:
            (x0, y0), (x1, y1) = shared
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            dx, dy = (gap, 0) if y0 == y1 else (0, gap)
            _opening(ax, (mx - dx, my - dy), (mx + dx, my + dy), door_bad)
        elif landing is not None and _shared_wall(ba, landing) and _shared_wall(bb, landing):
            for box in (ba, bb):
                (x0, y0), (x1, y1) = _shared_wall(box, landing)
                mx, my = (x0 + x1) / 2, (y0 + y1) / 2
                dx, dy = (gap, 0) if y0 == y1 else (0, gap)
                _opening(ax, (mx - dx, my - dy), (mx + dx, my + dy), door_bad)
        else:
            ax.plot(*zip(ba.centre, bb.centre), linestyle="--", linewidth=1, zorder=4,
                    color=FAIL_RED if door_bad else "#d08a1e")


def _shared_wall(a: Box, b: Box) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The segment two boxes share, if it is long enough for a door."""
    eps = 1e-6
    for ya, yb in ((a.y + a.h, b.y), (b.y + b.h, a.y)):
        if abs(ya - yb) < eps:
            lo, hi = max(a.x, b.x), min(a.x + a.w, b.x + b.w)
            if hi - lo > 0.5:
                return (lo, ya), (hi, ya)
    for xa, xb in ((a.x + a.w, b.x), (b.x + b.w, a.x)):
        if abs(xa - xb) < eps:
            lo, hi = max(a.y, b.y), min(a.y + a.h, b.y + b.h)
            if hi - lo > 0.5:
                return (xa, lo), (xa, hi)
    return None


def _opening(ax, p0: tuple[float, float], p1: tuple[float, float], bad: bool) -> None:
    """A door: the wall cut open (a paper-coloured gap) with a coloured sill."""
    ax.plot(*zip(p0, p1), color="white", linewidth=4, zorder=4, solid_capstyle="butt")
    ax.plot(*zip(p0, p1), color=FAIL_RED if bad else "#2e7d32", linewidth=2.2, zorder=4, solid_capstyle="butt")


def _elevation(ax, width: float, floors: int, roof: str, material: str, marks: Marks, r: Reader) -> None:
    ax.set_aspect("equal")
    ax.axis("off")
    walls_h = floors * STOREY_M
    wall, hatch = WALLS.get(material, ("#dddddd", ""))
    if material and material not in WALLS:
        r.notes.append(f"wall material {material!r} is unknown; drawn grey")
    bad_walls = marks.marked("material")
    ax.add_patch(Rectangle((0, 0), width, walls_h, facecolor=wall, hatch=hatch, linewidth=2 if bad_walls else 1.2,
                           edgecolor=FAIL_RED if bad_walls else INK))
    n_win = max(1, min(int(width / 4), 8))
    for f in range(floors):
        for k in range(n_win):
            x = (k + 0.5) * width / n_win
            if f == 0 and k == n_win // 2:  # the front door
                ax.add_patch(Rectangle((x - 0.55, 0), 1.1, 2.2, facecolor="#6b4a32", edgecolor=INK, linewidth=0.8))
                continue
            ax.add_patch(Rectangle((x - 0.5, f * STOREY_M + 1.0), 1.0, 1.2, facecolor="#cfe3f3", edgecolor=INK,
                                   linewidth=0.8))
    colour = ROOF_COLOUR.get(material, "#7a4b3a")
    bad_roof = marks.marked("roof")
    edge = dict(edgecolor=FAIL_RED if bad_roof else INK, linewidth=2 if bad_roof else 1.2, facecolor=colour)
    top = walls_h
    eave = width * 0.04
    rise = {"gable": 0.3, "steep": 0.65, "hipped": 0.22, "dome": 0.25}.get(roof, 0.05) * width
    if roof == "gable":
        pts = [(-eave, top), (width / 2, top + width * 0.3), (width + eave, top)]
    elif roof == "steep":
        pts = [(-eave, top), (width / 2, top + width * 0.65), (width + eave, top)]
    elif roof == "hipped":
        pts = [(-eave, top), (width * 0.3, top + width * 0.22), (width * 0.7, top + width * 0.22), (width + eave, top)]
    elif roof == "dome":
        pts = None
        ax.add_patch(Ellipse((width / 2, top), width * 0.7, width * 0.5, **edge))
    else:
        if roof and roof != "flat":
            r.notes.append(f"roof {roof!r} is unknown; drawn flat")
        pts = [(-eave * 0.3, top), (-eave * 0.3, top + 0.5), (width + eave * 0.3, top + 0.5), (width + eave * 0.3, top)]
    if pts:
        ax.add_patch(Polygon(pts, closed=True, **edge))
    ax.axhline(0, color="#6d8b4e", linewidth=3)
    ax.set_xlim(-width * 0.1, width * 1.1)
    # Keep the drawing's proportions: the box is wider than tall, so pad the height to match.
    ax.set_ylim(-0.5, max(top + rise + 0.5, width * 1.2 * 0.29 * HEIGHT / (0.42 * WIDTH)))
    ax.set_title("front elevation", fontsize=8, color=MUTED, pad=2)
