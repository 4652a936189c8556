"""Building domain: style, roof and material by culture and biome; rooms, stairs, footprint, doors."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

from srl_assets.domains.base import (Domain, Failure, ParamsChecker, ParamsError, Plan, Rules,
                                      RulesValidator)


HUB_FACTORS = (1.5, 2, 2.5)  # how much larger than its minimum a task may ask the hub to be


def _join(items: list[str], word: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _first_missing(preferred: list[str], allowed: list[str]) -> str | None:
    return next((x for x in preferred if x not in allowed), None)


def _first_allowed(preferred: list[str], allowed: list[str]) -> str | None:
    return next((x for x in preferred if x in allowed), None)


def _room_specs(params: dict[str, Any], rules: Rules) -> list[dict[str, Any]]:
    """The rooms a task requires (the function's rooms plus the requested extra), in order."""
    fn = rules.data["functions"][params["function"]]
    rooms = list(fn["rooms"])
    if "hub_m2" in params:  # the task asks for a larger hub
        rooms[0] = {**rooms[0], "area": params["hub_m2"]}
    if "extra" in params:
        rooms += [r for r in fn["extras"] if r["name"] == params["extra"]]
    return rooms


class BuildingDomain(Domain):
    name = "building"
    skills = {
        "culture_style": "style is the culture's, and roof and material are among the culture's",
        "biome_climate": "roof and material are among those the biome allows",
        "function_rooms": "every room the function (and the requested extra) needs is there, at its "
                          "minimum (or the task's) area, ground rooms on floor 1",
        "floor_area": "floors as asked, every floor used, and each floor's room area (stairs on every "
                      "floor) fits the footprint, which is at most the slack times the largest floor",
        "stairs": "a building of more than one floor has stairs on floor 1 of at least the minimum area",
        "door_connectivity": "doors join known rooms on one floor (or the stairs), room names are "
                             "unique, and every room is reachable from the street",
    }
    spec_shape = {
        "style": str, "roof": str, "material": str, "floors": int, "footprint": float,
        "rooms": [{"name": str, "area": float, "floor": int}],
        "doors": [[str]],
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        entrance = v.string("data.entrance")
        stairs = v.string("data.stairs.name")
        if stairs == entrance:
            raise v.fail("data.stairs.name", f"must differ from the entrance {entrance!r}")
        v.number("data.stairs.min_area_m2", lo=1.5, hi=100)
        v.string("data.stairs.lore")
        v.number("data.footprint_slack", lo=1.0, hi=3.0)
        v.string("data.default_style")
        roofs = set(v.strings("data.roofs"))
        materials = set(v.strings("data.materials"))
        biomes = v.mapping("data.biomes")
        for b in biomes:
            if set(v.strings(f"data.biomes.{b}.roofs", choices=roofs)) == roofs:
                raise v.fail(f"data.biomes.{b}.roofs", "a biome must rule out at least one roof")
            v.strings(f"data.biomes.{b}.materials", choices=materials)
            v.string(f"data.biomes.{b}.lore")
        for c in v.mapping("data.cultures"):
            p = f"data.cultures.{c}"
            if v.string(f"{p}.style") == v.at("data.default_style"):
                raise v.fail(f"{p}.style", "must differ from the default (no culture) style")
            c_roofs = v.strings(f"{p}.roofs", choices=roofs)
            c_mats = v.strings(f"{p}.materials", choices=materials)
            for i, _ in enumerate(v.sequence(f"{p}.biomes")):
                b = v.reference(f"{p}.biomes[{i}]", biomes, "biome")
                if _first_allowed(c_roofs, biomes[b]["roofs"]) is None:
                    raise v.fail(f"{p}.biomes[{i}]", f"no roof of culture {c!r} suits biome {b!r}")
                if _first_allowed(c_mats, biomes[b]["materials"]) is None:
                    raise v.fail(f"{p}.biomes[{i}]", f"no material of culture {c!r} suits biome {b!r}")
            v.string(f"{p}.lore")
        for fn in v.mapping("data.functions"):
            p = f"data.functions.{fn}"
            lo, hi = v.number_range(f"{p}.floors", lo=1, hi=6, integer=True)
            names: set[str] = set()
            for key in ("rooms", "extras"):
                for i, _ in enumerate(v.sequence(f"{p}.{key}", non_empty=key == "rooms")):
                    name = v.string(f"{p}.{key}[{i}].name")
                    if name in names or name in (entrance, stairs):
                        raise v.fail(f"{p}.{key}[{i}].name", f"room name {name!r} is taken")
                    names.add(name)
                    v.number(f"{p}.{key}[{i}].area", lo=1, hi=10000)
                    if not isinstance(v.at(f"{p}.{key}[{i}].ground"), bool):
                        raise v.fail(f"{p}.{key}[{i}].ground", "must be true or false")
            rooms = v.at(f"{p}.rooms")
            if not rooms[0]["ground"]:
                raise v.fail(f"{p}.rooms[0].ground", "the first room is the hub and must be a ground room")
            upper = sum(1 for r in rooms if not r["ground"])
            if hi > 1 + upper:
                raise v.fail(f"{p}.floors", f"{hi} floors but only {upper} upper rooms to fill them")
            v.string(f"{p}.lore")

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        function = rng.choice(sorted(data["functions"]))
        fn = data["functions"][function]
        params: dict[str, Any] = {"function": function, "floors": rng.randint(*fn["floors"])}
        draw = rng.random()
        if draw < 0.8:
            params["culture"] = rng.choice(sorted(data["cultures"]))
        if draw >= 0.45:  # 0.2 biome only, 0.35 culture only, 0.45 both
            known = data["cultures"][params["culture"]]["biomes"] if "culture" in params else sorted(data["biomes"])
            params["biome"] = rng.choice(known)
        if fn["extras"] and rng.random() < 0.6:
            params["extra"] = rng.choice(fn["extras"])["name"]
        if rng.random() < 0.35:
            params["hub_m2"] = round(fn["rooms"][0]["area"] * rng.choice(HUB_FACTORS))
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        c.keys({"function", "floors"}, {"culture", "biome", "extra", "hub_m2"})
        function = c.choice("function", data["functions"], "function")
        fn = data["functions"][function]
        c.number("floors", *fn["floors"], integer=True)
        culture = c.choice("culture", data["cultures"], "culture")
        known = data["cultures"][culture]["biomes"] if culture else data["biomes"]
        c.choice("biome", known, f"biome{' for the culture ' + repr(culture) if culture else ''}")
        if culture is None and "biome" not in params:
            raise ParamsError("culture", "a task needs a culture, a biome or both")
        c.choice("extra", [e["name"] for e in fn["extras"]], f"extra room of {function!r}")
        area = fn["rooms"][0]["area"]
        c.number("hub_m2", area, math.ceil(area * max(HUB_FACTORS)))

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        skills = ["function_rooms", "floor_area", "door_connectivity"]
        if "culture" in params:
            skills.append("culture_style")
        if "biome" in params:
            skills.append("biome_climate")
        if params["floors"] > 1:
            skills.append("stairs")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        floors = params["floors"]
        what = f"{params['culture']} {params['function']}" if "culture" in params else params["function"]
        text = f"Design {_a(what)} of {floors} floor{'s' if floors > 1 else ''}"
        if "biome" in params:
            text += f" for the {params['biome']}"
        text += "."
        if "extra" in params:
            text += f" It also needs {_a(params['extra'])}."
        if "hub_m2" in params:
            text += f" Its {rules.data['functions'][params['function']]['rooms'][0]['name']} is {params['hub_m2']} m2."
        return text

    # -- expert -----------------------------------------------------------------------------
    def _exterior(self, params: dict[str, Any], rules: Rules) -> tuple[str, str, str, list[tuple[str, str]]]:
        data = rules.data
        culture = data["cultures"].get(params.get("culture", ""))
        biome = data["biomes"].get(params.get("biome", ""))
        steps: list[tuple[str, str]] = []
        if culture is not None:
            c = params["culture"]
            style = culture["style"]
            if biome is None:
                roof, material = culture["roofs"][0], culture["materials"][0]
                steps.append(("Style", f"{c.capitalize()} builders use the {style} style; take their "
                                       f"first roof, {roof}, and first material, {material}."))
            else:
                roof = _first_allowed(culture["roofs"], biome["roofs"])
                material = _first_allowed(culture["materials"], biome["materials"])
                steps.append(("Style", f"{c.capitalize()} builders use the {style} style with "
                                       f"{_join(culture['materials'], 'or')} walls and "
                                       f"{_join(culture['roofs'], 'or')} roofs."))
        else:
            style = data["default_style"]
            roof, material = biome["roofs"][0], biome["materials"][0]
        if biome is not None:
            b = params["biome"]
            allows = (f"The {b} allows {_join(biome['roofs'], 'or')} roofs and "
                      f"{_join(biome['materials'], 'or')} walls")
            if culture is not None:
                steps.append(("Climate", f"{allows}, so build a {roof} roof and {material} walls."))
            else:
                steps.append(("Climate", f"With no named culture the style is {style}; {allows[0].lower()}"
                                         f"{allows[1:]}, so take the first: a {roof} roof and "
                                         f"{material} walls."))
        return style, roof, material, steps

    def _layout(self, params: dict[str, Any], rules: Rules):
        """Rooms with floors, stairs, per-floor totals, footprint and doors of the expert plan."""
        data = rules.data
        floors = params["floors"]
        stairs = data["stairs"]["name"]
        stairs_area = data["stairs"]["min_area_m2"]
        required = _room_specs(params, rules)
        rooms: list[dict[str, Any]] = []
        upper_i = 0
        for r in required:
            floor = 1
            if not r["ground"] and floors > 1:
                floor = 2 + upper_i % (floors - 1)
                upper_i += 1
            rooms.append({"name": r["name"], "area": r["area"], "floor": floor})
        if floors > 1:
            rooms.append({"name": stairs, "area": stairs_area, "floor": 1})
        totals = [sum(r["area"] for r in rooms if r["floor"] == f and r["name"] != stairs)
                  + (stairs_area if floors > 1 else 0) for f in range(1, floors + 1)]
        hub = required[0]["name"]
        doors = [[data["entrance"], hub]]
        for r in rooms[1:]:
            if r["name"] == stairs or r["floor"] == 1:
                doors.append([hub, r["name"]])
        for r in rooms:
            if r["floor"] > 1:
                doors.append([stairs, r["name"]])
        return required, rooms, totals, doors

    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        floors = params["floors"]
        stairs = data["stairs"]["name"]
        style, roof, material, steps = self._exterior(params, rules)
        required, rooms, totals, doors = self._layout(params, rules)
        footprint = max(totals)

        fn_rooms = [f"{r['name']} {r['area']}" for r in data["functions"][params["function"]]["rooms"]]
        rooms_text = f"{_a(params['function']).capitalize()} needs {_join(fn_rooms)} m2"
        if "hub_m2" in params:
            rooms_text += f", the task making {required[0]['name']} {params['hub_m2']} m2"
        if "extra" in params:
            rooms_text += f", plus {required[-1]['name']} {required[-1]['area']} m2"
        ground = [r["name"] for r in required if r["ground"]]
        rooms_text += f"; {_join(ground)} {'are ground rooms' if len(ground) > 1 else 'is the ground room'}."
        steps.append(("Rooms", rooms_text))

        if floors > 1:
            placed = [f"{r['name']} on floor {r['floor']}" for r in rooms if r["floor"] > 1]
            steps.append(("Floors", f"With {floors} floors, add {stairs} of {data['stairs']['min_area_m2']} m2 "
                                    f"on floor 1 and put {_join(placed)}."))
            held = [f"floor {f} holds {t} m2" for f, t in enumerate(totals, start=1)]
            steps.append(("Footprint", f"With the stairs on every floor, {_join(held)}; the footprint "
                                       f"is {footprint} m2."))
        else:
            steps.append(("Floors", "With 1 floor, every room is on floor 1 and no stairs are needed."))
            steps.append(("Footprint", f"Floor 1 holds {footprint} m2, so the footprint is {footprint} m2."))

        hub = required[0]["name"]
        from_hub = [b for a, b in doors[1:] if a == hub]
        doors_text = f"Out opens to {hub}; {hub} opens to {_join(from_hub)}"
        from_stairs = [b for a, b in doors if a == stairs]
        if from_stairs:
            doors_text += f"; {stairs} opens to {_join(from_stairs)}"
        steps.append(("Doors", doors_text + "."))

        spec = {
            "style": style, "roof": roof, "material": material, "floors": floors,
            "footprint": footprint, "rooms": rooms, "doors": doors,
        }
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        failures: list[Failure] = []
        rooms = spec["rooms"]
        stairs = data["stairs"]["name"]

        if "culture_style" in skills:
            failures += _check_culture(params["culture"], spec, data["cultures"][params["culture"]])
        if "biome_climate" in skills:
            biome = data["biomes"][params["biome"]]
            if spec["roof"] not in biome["roofs"]:
                failures.append(Failure("biome_climate", f"a {spec['roof']!r} roof does not suit the "
                                                         f"{params['biome']}: {biome['roofs']}"))
            elif spec["material"] not in biome["materials"]:
                failures.append(Failure("biome_climate", f"{spec['material']!r} walls do not suit the "
                                                         f"{params['biome']}: {biome['materials']}"))

        failures += self._check_rooms(params, spec, rules)
        failures += self._check_floor_area(params, spec, rules)

        if "stairs" in skills:
            found = [r for r in rooms if r["name"] == stairs]
            need = data["stairs"]["min_area_m2"]
            if not found:
                failures.append(Failure("stairs", f"{params['floors']} floors need a room named {stairs!r}"))
            elif found[0]["floor"] != 1:
                failures.append(Failure("stairs", f"the stairs start on floor {found[0]['floor']}, not floor 1"))
            elif not found[0]["area"] >= need:
                failures.append(Failure("stairs", f"stairs of {found[0]['area']} m2 are under {need} m2"))

        failures += _check_doors(spec, data["entrance"], stairs)
        return failures

    def _check_rooms(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        by_name: dict[str, dict[str, Any]] = {}
        for r in spec["rooms"]:
            by_name.setdefault(r["name"], r)
        for need in _room_specs(params, rules):
            got = by_name.get(need["name"])
            if got is None:
                return [Failure("function_rooms", f"a {params['function']} needs a {need['name']!r} room")]
            if not got["area"] >= need["area"]:
                return [Failure("function_rooms", f"{need['name']} is {got['area']} m2, under {need['area']} m2")]
            if need["ground"] and got["floor"] != 1:
                return [Failure("function_rooms", f"{need['name']} is a ground room but is on floor {got['floor']}")]
        return []

    def _check_floor_area(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        floors = params["floors"]  # the task's value: small, safe to iterate
        stairs = rules.data["stairs"]["name"]

        def fail(reason: str) -> list[Failure]:
            return [Failure("floor_area", reason)]

        if spec["floors"] != floors:
            return fail(f"floors is {spec['floors']}, task asks {floors}")
        for r in spec["rooms"]:
            if not r["area"] > 0:
                return fail(f"room {r['name']!r} has area {r['area']}")
            if not 1 <= r["floor"] <= floors:
                return fail(f"room {r['name']!r} is on floor {r['floor']} of a {floors}-floor building")
        stairs_area = sum(r["area"] for r in spec["rooms"] if r["name"] == stairs)
        totals = []
        for f in range(1, floors + 1):
            here = [r["area"] for r in spec["rooms"] if r["floor"] == f and r["name"] != stairs]
            if not here:
                return fail(f"floor {f} holds no room")
            totals.append(sum(here) + stairs_area)
        largest = max(totals)
        footprint = spec["footprint"]
        slack = rules.data["footprint_slack"]
        if not footprint >= largest:
            return fail(f"footprint {footprint} m2 is smaller than a floor of {largest} m2")
        if not footprint <= largest * slack:
            return fail(f"footprint {footprint} m2 exceeds {slack} x the largest floor ({largest} m2)")
        return []

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        out = copy.deepcopy(spec)
        stairs = data["stairs"]["name"]
        if skill == "culture_style":
            styles = [data["default_style"]] + [c["style"] for c in data["cultures"].values()]
            out["style"] = next(s for s in styles if s != out["style"])
        elif skill == "biome_climate":
            # Prefer a roof (or else a material) the culture uses but the biome rules out.
            biome = data["biomes"][params["biome"]]
            culture = data["cultures"].get(params.get("culture", ""), {"roofs": [], "materials": []})
            roof = _first_missing(culture["roofs"], biome["roofs"])
            material = _first_missing(culture["materials"], biome["materials"])
            if roof is None and material is not None:
                out["material"] = material
            else:
                out["roof"] = roof or _first_missing(data["roofs"], biome["roofs"])
        elif skill == "function_rooms":
            # Rename the last required room that is not the hub, doors included.
            old = _room_specs(params, rules)[-1]["name"]
            taken = {r["name"] for r in out["rooms"]}
            new = next(n for n in (f"spare{i}" for i in range(1, 100)) if n not in taken)
            for r in out["rooms"]:
                if r["name"] == old:
                    r["name"] = new
            out["doors"] = [[new if x == old else x for x in d] for d in out["doors"]]
        elif skill == "floor_area":
            out["footprint"] = out["footprint"] / 2
        elif skill == "stairs":
            for r in out["rooms"]:
                if r["name"] == stairs:
                    r["area"] = data["stairs"]["min_area_m2"] - 1
        elif skill == "door_connectivity":
            out["doors"] = out["doors"][1:]  # no door from the street
        else:
            raise KeyError(f"building has no skill {skill!r}")
        return out


def _check_culture(culture: str, spec: dict[str, Any], rule: dict[str, Any]) -> list[Failure]:
    if spec["style"] != rule["style"]:
        return [Failure("culture_style", f"{culture} builders use the {rule['style']} style, not {spec['style']!r}")]
    if spec["roof"] not in rule["roofs"]:
        return [Failure("culture_style", f"{culture} builders make {rule['roofs']} roofs, not {spec['roof']!r}")]
    if spec["material"] not in rule["materials"]:
        return [Failure("culture_style", f"{culture} builders use {rule['materials']}, not {spec['material']!r}")]
    return []


def _check_doors(spec: dict[str, Any], entrance: str, stairs: str) -> list[Failure]:
    def fail(reason: str) -> list[Failure]:
        return [Failure("door_connectivity", reason)]

    floor_of: dict[str, int] = {}
    for r in spec["rooms"]:
        if r["name"] in floor_of or r["name"] == entrance:
            return fail(f"room name {r['name']!r} is used twice")
        floor_of[r["name"]] = r["floor"]
    links: dict[str, set[str]] = {name: set() for name in floor_of}
    links[entrance] = set()
    for door in spec["doors"]:
        if len(door) != 2:
            return fail(f"door {door} must join exactly two rooms")
        a, b = door
        for end in (a, b):
            if end not in links:
                return fail(f"door {door} names an unknown room {end!r}")
        if stairs not in (a, b) and floor_of.get(a, 1) != floor_of.get(b, 1):
            return fail(f"door {door} joins floors {floor_of.get(a, 1)} and {floor_of.get(b, 1)}; "
                        f"only the stairs join floors")
        links[a].add(b)
        links[b].add(a)
    seen, todo = {entrance}, [entrance]
    while todo:
        for nxt in links[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    unreachable = [name for name in floor_of if name not in seen]
    if unreachable:
        return fail(f"no door path from {entrance} reaches {_join(unreachable)}")
    return []
