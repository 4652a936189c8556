"""Tree domain: species traits, size growing with age, L-system generation, seasonal foliage."""

from __future__ import annotations

import copy
import random
from typing import Any

from srl_assets.domains.base import Domain, Failure, ParamsChecker, Plan, Rules, RulesValidator

HABITS = ("deciduous", "evergreen")
SEASON_COLOURS = ("foliage", "autumn", "bare")  # what a habit shows in a season
REQUIRED_SEASONS = ("spring", "summer", "autumn", "winter")
DEFAULT_SEASON = "summer"  # a task without a season shows the tree in summer
# Ages are drawn as these fractions of the species' full-size age (>= 1 means fully grown).
AGE_FRACTIONS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0, 1.5, 2.0)


def _g(x: float) -> str:
    """A number as the lore writes it: 20, 0.75, 1.5."""
    return f"{x:g}"


def _norm(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _mid(pair: list[float]) -> float:
    return (pair[0] + pair[1]) / 2


def growth_of(params: dict[str, Any], species: dict[str, Any]) -> float:
    """min(1, age / full-size age) rounded to 2 decimals; a task without an age is mature."""
    if "age_years" not in params:
        return 1.0
    return round(min(1.0, params["age_years"] / species["maturity_years"]), 2)


def season_colour(rules: Rules, species: dict[str, Any], season: str) -> str:
    """The colour a species shows in a season: its foliage, its autumn colour, or 'bare'."""
    kind = rules.data["foliage_by_season"]["habits"][species["habit"]][season]
    return "bare" if kind == "bare" else species[kind]


class TreeDomain(Domain):
    name = "tree"
    skills = {
        "species_traits": "habit, leaf type and crown shape are the species' own",
        "height_growth": "age is the task's and height is the mature height range scaled by "
                         "min(1, age / full-size age), within the tolerance",
        "trunk_growth": "trunk diameter is the mature diameter range scaled by growth, within "
                        "the tolerance",
        "branching_angle": "the L-system branching angle lies in the species' range",
        "lsystem_shape": "L-system iterations and length ratio lie in the crown's ranges",
        "seasonal_foliage": "the foliage colour is the one the habit shows in the season",
    }
    spec_shape = {
        "species": str, "habit": str, "leaf": str, "crown": str, "age_years": int,
        "height_m": float, "trunk_diameter_m": float,
        "lsystem": {"iterations": int, "angle_deg": float, "length_ratio": float},
        "season": str, "foliage": str,
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        seasons = set(v.strings("data.seasons"))
        for s in REQUIRED_SEASONS:
            if s not in seasons:
                raise v.fail("data.seasons", f"must include {s!r}")
        leaf_types = set(v.strings("data.leaf_types"))
        v.string("data.foliage_by_season.lore")
        habits = v.mapping("data.foliage_by_season.habits")
        for h in HABITS:
            v.mapping(f"data.foliage_by_season.habits.{h}")
        for h in habits:
            if h not in HABITS:
                raise v.fail(f"data.foliage_by_season.habits.{h}", f"unknown habit; expected one of {list(HABITS)}")
            for s in seasons:
                v.string(f"data.foliage_by_season.habits.{h}.{s}", choices=SEASON_COLOURS)
        v.number("data.growth.tolerance", lo=0, hi=0.5)
        v.string("data.growth.lore")
        it_lo, it_hi = v.number_range("data.lsystem.iterations", lo=1, hi=12, integer=True)
        lr_lo, lr_hi = v.number_range("data.lsystem.length_ratio", lo=0.05, hi=1.0)
        v.string("data.lsystem.lore")
        crowns = v.mapping("data.crowns")
        for c in crowns:
            v.number_range(f"data.crowns.{c}.iterations", lo=it_lo, hi=it_hi, integer=True)
            v.number_range(f"data.crowns.{c}.length_ratio", lo=lr_lo, hi=lr_hi)
        for sp in v.mapping("data.species"):
            p = f"data.species.{sp}"
            v.string(f"{p}.name")
            habit = v.string(f"{p}.habit", choices=HABITS)
            v.string(f"{p}.leaf", choices=leaf_types)
            v.reference(f"{p}.crown", crowns, "crown")
            v.number_range(f"{p}.height_m", lo=0.5, hi=130)
            v.number_range(f"{p}.trunk_diameter_m", lo=0.01, hi=20)
            v.number(f"{p}.maturity_years", lo=1, hi=5000, integer=True)
            v.number_range(f"{p}.branching_angle_deg", lo=0, hi=180)
            v.string(f"{p}.foliage")
            uses_autumn = "autumn" in habits[habit].values()
            if uses_autumn:
                v.string(f"{p}.autumn")
            elif v.at(f"{p}.autumn", None) is not None:
                raise v.fail(f"{p}.autumn", f"{habit} species show no autumn colour; remove it")
            v.string(f"{p}.lore")

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        species = rng.choice(sorted(data["species"]))
        params: dict[str, Any] = {
            "species": species,
            "ask_angle": rng.random() < 0.6,
            "ask_lsystem": rng.random() < 0.6,
        }
        if rng.random() < 0.75:
            maturity = data["species"][species]["maturity_years"]
            params["age_years"] = max(1, round(maturity * rng.choice(AGE_FRACTIONS)))
        if rng.random() < 0.7:
            params["season"] = rng.choice(data["seasons"])
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        c.keys({"species", "ask_angle", "ask_lsystem"}, {"age_years", "season"})
        species = c.choice("species", data["species"], "species")
        c.boolean("ask_angle")
        c.boolean("ask_lsystem")
        maturity = data["species"][species]["maturity_years"]
        c.number("age_years", 1, max(1, round(maturity * max(AGE_FRACTIONS))), integer=True)
        c.choice("season", data["seasons"], "season")

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        skills = ["species_traits", "height_growth", "trunk_growth"]
        if params.get("ask_angle"):
            skills.append("branching_angle")
        if params.get("ask_lsystem"):
            skills.append("lsystem_shape")
        if "season" in params:
            skills.append("seasonal_foliage")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        name = rules.data["species"][params["species"]]["name"]
        who = f"a {name} aged {params['age_years']} years" if "age_years" in params else f"a mature {name}"
        asks = ["habit", "leaf type", "crown", "height", "trunk diameter"]
        if params.get("ask_angle"):
            asks.append("branching angle")
        if params.get("ask_lsystem"):
            asks.append("L-system iterations and length ratio")
        if "season" in params:
            asks.append("foliage colour")
        where = f" as seen in {params['season']}" if "season" in params else ""
        return f"Grow {who}{where}. Give its {', '.join(asks[:-1])} and {asks[-1]}."

    # -- expert -----------------------------------------------------------------------------
    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        sp = data["species"][params["species"]]
        crown = data["crowns"][sp["crown"]]
        mat = sp["maturity_years"]
        f = growth_of(params, sp)
        age = params.get("age_years", mat)
        if "age_years" not in params:
            growth_note = f"A mature tree is full size at {mat} years: growth 1.0."
        elif age >= mat:
            growth_note = f"Age {age} is past full size at {mat} years: growth 1.0."
        else:
            growth_note = f"Age {age} of {mat} years to full size gives growth {f}."
        h_mid, d_mid = _mid(sp["height_m"]), _mid(sp["trunk_diameter_m"])
        height, trunk = round(h_mid * f, 1), round(d_mid * f, 2)
        angle = round(_mid(sp["branching_angle_deg"]))
        it_lo, it_hi = crown["iterations"]
        iterations = (it_lo + it_hi) // 2
        ratio = round(_mid(crown["length_ratio"]), 2)
        season = params.get("season", DEFAULT_SEASON)
        colour = season_colour(rules, sp, season)
        kind = data["foliage_by_season"]["habits"][sp["habit"]][season]
        tree = f"{'an' if sp['habit'][0] in 'aeiou' else 'a'} {sp['habit']} tree"
        foliage_note = {"bare": f"In {season} {tree} is bare.",
                        "autumn": f"In {season} {tree} turns {colour}.",
                        "foliage": f"In {season} {tree} shows its {colour} foliage."}[kind]
        crown_name = sp["crown"].replace("_", "-")
        steps = [
            ("Species", f"{sp['name'][0].upper()}{sp['name'][1:]}: {sp['habit']}, leaf type "
                        f"{sp['leaf']}, {crown_name} crown."),
            ("Growth", growth_note),
            ("Size", f"Middle height {_g(h_mid)} m and trunk {_g(d_mid)} m times {f} give "
                     f"{_g(height)} m and {_g(trunk)} m."),
            ("Branching", f"It branches at {_g(sp['branching_angle_deg'][0])} to "
                          f"{_g(sp['branching_angle_deg'][1])} degrees; use {angle}."),
            ("L-system", f"A {crown_name} crown takes {it_lo} to {it_hi} iterations and length "
                         f"ratio {_g(crown['length_ratio'][0])} to {_g(crown['length_ratio'][1])}; "
                         f"use {iterations} and {_g(ratio)}."),
            ("Foliage", foliage_note),
        ]
        spec = {
            "species": params["species"], "habit": sp["habit"], "leaf": sp["leaf"],
            "crown": sp["crown"], "age_years": age, "height_m": height, "trunk_diameter_m": trunk,
            "lsystem": {"iterations": iterations, "angle_deg": angle, "length_ratio": ratio},
            "season": season, "foliage": colour,
        }
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        sp = data["species"][params["species"]]
        failures: list[Failure] = []

        if spec["species"] != params["species"]:
            failures.append(Failure("species_traits", f"species is {spec['species']!r}, task asks {params['species']!r}"))
        else:
            for key in ("habit", "leaf", "crown"):
                if _norm(spec[key]) != sp[key]:
                    failures.append(Failure("species_traits", f"{sp['name']} has {key} {sp[key]!r}, spec says {spec[key]!r}"))
                    break

        f = min(1.0, params["age_years"] / sp["maturity_years"]) if "age_years" in params else 1.0
        tol = data["growth"]["tolerance"]
        if "age_years" in params and spec["age_years"] != params["age_years"]:
            failures.append(Failure("height_growth", f"age is {spec['age_years']}, task asks {params['age_years']}"))
        elif "age_years" not in params and spec["age_years"] < sp["maturity_years"]:
            failures.append(Failure("height_growth", f"a mature {sp['name']} is at least {sp['maturity_years']} years old, spec says {spec['age_years']}"))
        else:
            failures.extend(_size_failure("height_growth", "height_m", spec, sp["height_m"], f, tol))
        failures.extend(_size_failure("trunk_growth", "trunk_diameter_m", spec, sp["trunk_diameter_m"], f, tol))

        ls = spec["lsystem"]
        if "branching_angle" in skills:
            lo, hi = sp["branching_angle_deg"]
            if not lo <= ls["angle_deg"] <= hi:
                failures.append(Failure("branching_angle", f"angle {ls['angle_deg']} is outside {sp['name']}'s {lo} to {hi} degrees"))
        if "lsystem_shape" in skills:
            crown = data["crowns"][sp["crown"]]
            if not crown["iterations"][0] <= ls["iterations"] <= crown["iterations"][1]:
                failures.append(Failure("lsystem_shape", f"iterations {ls['iterations']} outside {crown['iterations']} for a {sp['crown']} crown"))
            elif not crown["length_ratio"][0] <= ls["length_ratio"] <= crown["length_ratio"][1]:
                failures.append(Failure("lsystem_shape", f"length ratio {ls['length_ratio']} outside {crown['length_ratio']} for a {sp['crown']} crown"))
        if "seasonal_foliage" in skills:
            season = params["season"]
            expected = season_colour(rules, sp, season)
            if spec["season"] != season:
                failures.append(Failure("seasonal_foliage", f"season is {spec['season']!r}, task asks {season!r}"))
            elif _norm(spec["foliage"]) != expected.lower():
                failures.append(Failure("seasonal_foliage", f"a {sp['name']} in {season} is {expected!r}, spec says {spec['foliage']!r}"))
        return failures

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        sp = data["species"][params["species"]]
        out = copy.deepcopy(spec)
        f = growth_of(params, sp)
        if skill == "species_traits":
            out["habit"] = next(h for h in HABITS if h != sp["habit"])
        elif skill == "height_growth":
            out["height_m"] = round(sp["height_m"][1] * f * 1.5 + 1, 1)
        elif skill == "trunk_growth":
            out["trunk_diameter_m"] = round(sp["trunk_diameter_m"][1] * f * 1.5 + 0.5, 2)
        elif skill == "branching_angle":
            out["lsystem"]["angle_deg"] = sp["branching_angle_deg"][1] + 25
        elif skill == "lsystem_shape":
            out["lsystem"]["iterations"] = data["crowns"][sp["crown"]]["iterations"][1] + 3
        elif skill == "seasonal_foliage":
            expected = season_colour(rules, sp, params["season"])
            out["foliage"] = "bare" if expected != "bare" else sp["foliage"]
        else:
            raise KeyError(f"tree has no skill {skill!r}")
        return out


def _size_failure(skill: str, key: str, spec: dict[str, Any], mature: list[float], f: float,
                  tol: float) -> list[Failure]:
    """The size must lie in the mature range scaled by growth, widened by the tolerance."""
    lo, hi = mature[0] * f * (1 - tol), mature[1] * f * (1 + tol)
    if lo <= spec[key] <= hi:
        return []
    return [Failure(skill, f"{key} {spec[key]} is outside {round(lo, 3)} to {round(hi, 3)} "
                           f"(mature {mature[0]} to {mature[1]} times growth {round(f, 2)})")]
