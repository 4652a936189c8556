"""Animal domain: body plan by class, dentition by diet, habitat adaptations, size-mass, danger, moves."""

from __future__ import annotations

import copy
import random
from typing import Any

from srl_assets.domains.base import Domain, Failure, ParamsChecker, Plan, Rules, RulesValidator

SIZE_ORDER = ("tiny", "small", "medium", "large", "huge")
CAP_FRACTIONS = (0.2, 0.4, 0.6, 0.8)


def _num(x: float) -> float:
    """Round to 3 decimals and drop a trailing .0, so 550.0 prints as 550."""
    x = round(x, 3)
    return int(x) if x == int(x) else x


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def expected_adaptations(cls: str, habitat: str, data: dict[str, Any]) -> list[str]:
    """The habitat's adaptations that suit the class, in the habitat's order of preference."""
    return [a for a in data["habitats"][habitat]["adaptations"] if cls in data["adaptations"][a]]


def expected_moves(cls: str, habitat: str, data: dict[str, Any]) -> list[str]:
    own = list(data["classes"][cls]["moves"])
    return own + [m for m in data["habitats"][habitat]["moves"] if m not in own]


class AnimalDomain(Domain):
    name = "animal"
    skills = {
        "class_anatomy": "legs, wings and covering are the class's",
        "diet_dentition": "the diet is the task's and the dentition the one the class has for it",
        "habitat_adaptations": "adaptations are the habitat's, each one suiting the class",
        "size_mass": "mass lies in the size class's range, under the class's record and any cap",
        "danger_level": "danger lies in the range the diet and size give",
        "locomotion": "moves are the class's own plus those the habitat adds",
    }
    spec_shape = {
        "class": str, "diet": str, "habitat": str, "size": str, "mass_kg": float,
        "legs": int, "wings": int, "covering": str, "dentition": str, "adaptations": [str],
        "danger": ("optional", int), "moves": ("optional", [str]),
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        diets = set(v.strings("data.diets"))
        moves = set(v.strings("data.moves"))
        sizes = v.mapping("data.sizes")
        if set(sizes) != set(SIZE_ORDER):
            raise v.fail("data.sizes", f"must name exactly the size classes {list(SIZE_ORDER)}")
        for s in SIZE_ORDER:
            v.number_range(f"data.sizes.{s}.mass_kg", lo=0.000001, hi=1_000_000)
        for a, b in zip(SIZE_ORDER, SIZE_ORDER[1:]):
            if sizes[a]["mass_kg"][1] > sizes[b]["mass_kg"][0]:
                raise v.fail(f"data.sizes.{b}.mass_kg", f"starts below the top of {a}")
        v.string("data.size_lore")
        for d in diets:
            for s in SIZE_ORDER:
                v.number_range(f"data.danger.{d}.{s}", lo=0, hi=5, integer=True)
            v.string(f"data.danger.{d}.lore")
        adaptations = v.mapping("data.adaptations")
        classes = v.mapping("data.classes")
        for a in adaptations:
            for i, _ in enumerate(v.sequence(f"data.adaptations.{a}")):
                v.reference(f"data.adaptations.{a}[{i}]", classes, "class")
        habitats = v.mapping("data.habitats")
        for h in habitats:
            for i, _ in enumerate(v.sequence(f"data.habitats.{h}.adaptations")):
                v.reference(f"data.habitats.{h}.adaptations[{i}]", adaptations, "adaptation")
            v.strings(f"data.habitats.{h}.moves", choices=moves, non_empty=False)
            v.string(f"data.habitats.{h}.lore")
        for c in classes:
            p = f"data.classes.{c}"
            v.number(f"{p}.legs", lo=0, hi=100, integer=True)
            v.number(f"{p}.wings", lo=0, hi=8, integer=True)
            v.string(f"{p}.covering")
            dentition = v.mapping(f"{p}.dentition")
            for d in dentition:
                if d not in diets:
                    raise v.fail(f"{p}.dentition.{d}", f"unknown diet {d!r}; known: {sorted(diets)}")
                v.string(f"{p}.dentition.{d}")
            v.strings(f"{p}.moves", choices=moves)
            max_mass = v.number(f"{p}.max_mass_kg", lo=0.000001)
            for s in v.strings(f"{p}.sizes", choices=SIZE_ORDER):
                if max_mass < sizes[s]["mass_kg"][0]:
                    raise v.fail(f"{p}.max_mass_kg", f"{max_mass} is below the smallest {s} mass")
            for i, _ in enumerate(v.sequence(f"{p}.habitats")):
                h = v.reference(f"{p}.habitats[{i}]", habitats, "habitat")
                if not expected_adaptations(c, h, v.data["data"]):
                    raise v.fail(f"{p}.habitats[{i}]", f"no adaptation of the {h} suits class {c!r}")
            v.string(f"{p}.lore")

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        cls = rng.choice(sorted(data["classes"]))
        c = data["classes"][cls]
        params: dict[str, Any] = {
            "class": cls,
            "diet": rng.choice(sorted(c["dentition"])),
            "habitat": rng.choice(c["habitats"]),
            "size": rng.choice(c["sizes"]),
            "ask_danger": rng.random() < 0.6,
            "ask_moves": rng.random() < 0.5,
        }
        if rng.random() < 0.3:
            lo = data["sizes"][params["size"]]["mass_kg"][0]
            mass = self._mass(params, rules)[0]
            params["max_mass_kg"] = _num(lo + (mass - lo) * rng.choice(CAP_FRACTIONS))
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        c.keys({"class", "diet", "habitat", "size", "ask_danger", "ask_moves"}, {"max_mass_kg"})
        cls = c.choice("class", data["classes"], "class")
        spec = data["classes"][cls]
        c.choice("diet", spec["dentition"], f"diet of {cls!r}")
        c.choice("habitat", spec["habitats"], f"habitat of {cls!r}")
        c.choice("size", spec["sizes"], f"size of {cls!r}")
        c.boolean("ask_danger")
        c.boolean("ask_moves")
        if "max_mass_kg" in params:
            lo = data["sizes"][params["size"]]["mass_kg"][0]
            c.number("max_mass_kg", lo, self._mass({**params, "max_mass_kg": None}, rules)[0])

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        skills = ["class_anatomy", "diet_dentition", "habitat_adaptations", "size_mass"]
        if params.get("ask_danger"):
            skills.append("danger_level")
        if params.get("ask_moves"):
            skills.append("locomotion")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        text = (f"Design {_a(params['size'])} {params['diet']} {params['class']} of the "
                f"{params['habitat']}: its body, teeth, adaptations and mass.")
        if "max_mass_kg" in params:
            text += f" It weighs at most {params['max_mass_kg']} kg."
        if params.get("ask_danger"):
            text += " Rate its danger."
        if params.get("ask_moves"):
            text += " Say how it moves."
        return text

    # -- expert -----------------------------------------------------------------------------
    def _mass(self, params: dict[str, Any], rules: Rules) -> tuple[float, str]:
        """The expert's mass (midpoint, then the class record, then the task's cap) and why."""
        data = rules.data
        lo, hi = data["sizes"][params["size"]]["mass_kg"]
        mass = _num((lo + hi) / 2)
        note = f"{params['size'].capitalize()} animals weigh {_num(lo)} to {_num(hi)} kg; take the middle, {mass} kg"
        record = data["classes"][params["class"]]["max_mass_kg"]
        if mass > record:
            mass = _num(record)
            note += f", but {params['class']}s weigh at most {mass} kg"
        cap = params.get("max_mass_kg")
        if cap is not None and mass > cap:
            mass = cap
            note += f", and the task caps it at {cap} kg"
        return mass, note + "."

    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        cls, diet, habitat, size = params["class"], params["diet"], params["habitat"], params["size"]
        c = data["classes"][cls]
        dentition = c["dentition"][diet]
        adaptations = expected_adaptations(cls, habitat, data)[:2]
        mass, mass_note = self._mass(params, rules)
        steps = [
            ("Anatomy", f"{_a(cls).capitalize()} has {c['legs']} legs, {c['wings']} wings and "
                        f"{c['covering']}."),
            ("Teeth", f"{_a(diet).capitalize()} {cls} has {dentition} dentition."),
            ("Habitat", f"In the {habitat}, {_a(cls)} adapts with {_join(adaptations)}."),
            ("Mass", mass_note),
        ]
        spec: dict[str, Any] = {
            "class": cls, "diet": diet, "habitat": habitat, "size": size, "mass_kg": mass,
            "legs": c["legs"], "wings": c["wings"], "covering": c["covering"],
            "dentition": dentition, "adaptations": adaptations,
        }
        if params.get("ask_danger"):
            lo, hi = data["danger"][diet][size]
            spec["danger"] = (lo + hi) // 2
            steps.append(("Danger", f"{_a(size).capitalize()} {diet} has danger {lo} to {hi}; "
                                    f"take the middle, rounded down: {spec['danger']}."))
        if params.get("ask_moves"):
            moves = expected_moves(cls, habitat, data)
            added = [m for m in moves if m not in c["moves"]]
            where = f"the {habitat} adds {_join(added)}" if added else f"the {habitat} adds nothing"
            spec["moves"] = moves
            steps.append(("Moves", f"{_a(cls).capitalize()} moves by {_join(c['moves'])}; "
                                   f"{where}."))
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        cls, diet, habitat, size = params["class"], params["diet"], params["habitat"], params["size"]
        c = data["classes"][cls]
        failures: list[Failure] = []

        def fail(skill: str, reason: str) -> None:
            failures.append(Failure(skill, reason))

        if spec["class"] != cls:
            fail("class_anatomy", f"class is {spec['class']!r}, task asks {cls!r}")
        else:
            for key in ("legs", "wings", "covering"):
                if spec[key] != c[key]:
                    fail("class_anatomy", f"{_a(cls)} has {key} {c[key]!r}, spec says {spec[key]!r}")
                    break

        if spec["diet"] != diet:
            fail("diet_dentition", f"diet is {spec['diet']!r}, task asks {diet!r}")
        elif spec["dentition"] != c["dentition"][diet]:
            fail("diet_dentition", f"{_a(diet)} {cls} has {c['dentition'][diet]} dentition, "
                                   f"spec says {spec['dentition']!r}")

        allowed = expected_adaptations(cls, habitat, data)
        if spec["habitat"] != habitat:
            fail("habitat_adaptations", f"habitat is {spec['habitat']!r}, task asks {habitat!r}")
        elif not spec["adaptations"]:
            fail("habitat_adaptations", f"no adaptation listed; the {habitat} offers {allowed}")
        else:
            wrong = [a for a in spec["adaptations"] if a not in allowed]
            if wrong:
                fail("habitat_adaptations", f"{wrong[0]!r} is not an adaptation {_a(cls)} has in the "
                                            f"{habitat}: {allowed}")

        lo, hi = data["sizes"][size]["mass_kg"]
        mass = spec["mass_kg"]
        cap = min(c["max_mass_kg"], params.get("max_mass_kg", float("inf")))
        if spec["size"] != size:
            fail("size_mass", f"size is {spec['size']!r}, task asks {size!r}")
        elif not lo <= mass <= hi:
            fail("size_mass", f"{mass} kg is outside the {size} range {lo} to {hi} kg")
        elif not mass <= cap:
            fail("size_mass", f"{mass} kg exceeds the most {_a(cls)} of this task may weigh, {cap} kg")

        if "danger_level" in skills:
            d_lo, d_hi = data["danger"][diet][size]
            if "danger" not in spec:
                fail("danger_level", "the task asks for a danger rating")
            elif not d_lo <= spec["danger"] <= d_hi:
                fail("danger_level", f"{_a(size)} {diet} has danger {d_lo} to {d_hi}, not {spec['danger']}")

        if "locomotion" in skills:
            want = expected_moves(cls, habitat, data)
            if "moves" not in spec:
                fail("locomotion", "the task asks how it moves")
            elif set(spec["moves"]) != set(want):
                fail("locomotion", f"{_a(cls)} of the {habitat} moves by {want}, not {spec['moves']}")
        return failures

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        out = copy.deepcopy(spec)
        cls = params["class"]
        if skill == "class_anatomy":
            out["legs"] = out["legs"] + 2
        elif skill == "diet_dentition":
            dentitions = {d for k in data["classes"].values() for d in k["dentition"].values()}
            out["dentition"] = sorted(dentitions - {out["dentition"]})[0]
        elif skill == "habitat_adaptations":
            foreign = [a for a, owners in data["adaptations"].items() if cls not in owners]
            out["adaptations"] = out["adaptations"] + (foreign[:1] or ["no_such_adaptation"])
        elif skill == "size_mass":
            out["mass_kg"] = data["sizes"][params["size"]]["mass_kg"][1] * 3
        elif skill == "danger_level":
            hi = data["danger"][params["diet"]][params["size"]][1]
            out["danger"] = hi + 1
        elif skill == "locomotion":
            out["moves"] = [m for m in data["moves"] if m not in out["moves"]] or out["moves"][:-1]
        else:
            raise KeyError(f"animal has no skill {skill!r}")
        return out
