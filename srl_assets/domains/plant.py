"""Plant domain: biome climate, growth-form heights, family edibility and flowering, rarity."""

from __future__ import annotations

import copy
import random
from typing import Any

from srl_assets.domains.base import Domain, Failure, ParamsChecker, Plan, Rules, RulesValidator

EDIBILITY = ("edible", "toxic", "inedible")


def _within(pair: list[float], bounds: list[float]) -> bool:
    lo, hi = pair
    return bounds[0] <= lo <= hi <= bounds[1]


class PlantDomain(Domain):
    name = "plant"
    skills = {
        "biome_climate": "temperature and rainfall ranges lie inside the biome's ranges",
        "growth_form_height": "height lies inside the growth form's height range",
        "family_edibility": "edibility is the one the family's lore gives",
        "flowering_season": "flowering season is one the family flowers in ('none' for spore plants)",
        "rarity": "rarity is the requested tier and spawn weight lies in the tier's range",
        "soil_ph": "soil is the requested one and its pH lies in the soil's pH range",
    }
    spec_shape = {
        "name": str, "biome": str, "family": str, "growth_form": str,
        "temperature_c": [float], "rainfall_mm": [float], "height_m": float,
        "edibility": str, "flowering_season": str, "rarity": str, "spawn_weight": float,
        "soil": str, "soil_ph": float,
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        seasons = set(v.strings("data.seasons"))
        biomes = v.mapping("data.biomes")
        for b in biomes:
            v.number_range(f"data.biomes.{b}.temperature_c", lo=-90, hi=60)
            v.number_range(f"data.biomes.{b}.rainfall_mm", lo=0, hi=12000)
            v.string(f"data.biomes.{b}.lore")
        soils = v.mapping("data.soils")
        for s in soils:
            v.number_range(f"data.soils.{s}.ph", lo=0, hi=14)
        for b in biomes:
            for i, _ in enumerate(v.sequence(f"data.biomes.{b}.soils")):
                v.reference(f"data.biomes.{b}.soils[{i}]", soils, "soil")
        forms = v.mapping("data.growth_forms")
        for f in forms:
            v.number_range(f"data.growth_forms.{f}.height_m", lo=0.001, hi=150)
        tiers = v.mapping("data.rarity_tiers")
        for t in tiers:
            v.number_range(f"data.rarity_tiers.{t}.spawn_weight", lo=0, hi=1)
        for fam in v.mapping("data.families"):
            p = f"data.families.{fam}"
            for i, _ in enumerate(v.sequence(f"{p}.growth_forms")):
                v.reference(f"{p}.growth_forms[{i}]", forms, "growth form")
            for i, _ in enumerate(v.sequence(f"{p}.biomes")):
                v.reference(f"{p}.biomes[{i}]", biomes, "biome")
            v.string(f"{p}.edibility", choices=EDIBILITY)
            v.strings(f"{p}.flowering_seasons", choices=seasons, non_empty=False)
            v.string(f"{p}.lore")

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        family = rng.choice(sorted(data["families"]))
        fam = data["families"][family]
        params: dict[str, Any] = {
            "family": family,
            "biome": rng.choice(fam["biomes"]),
            "growth_form": rng.choice(fam["growth_forms"]),
            "ask_flowering": rng.random() < 0.7,
        }
        if rng.random() < 0.6:
            params["rarity"] = rng.choice(sorted(data["rarity_tiers"]))
        if rng.random() < 0.6:
            params["soil"] = rng.choice(data["biomes"][params["biome"]]["soils"])
        if rng.random() < 0.5:
            lo, hi = data["growth_forms"][params["growth_form"]]["height_m"]
            params["max_height_m"] = round(lo + (hi - lo) * rng.choice([0.2, 0.3, 0.4, 0.6, 0.8]), 2)
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        c.keys({"family", "biome", "growth_form", "ask_flowering"}, {"rarity", "soil", "max_height_m"})
        family = c.choice("family", data["families"], "family")
        fam = data["families"][family]
        biome = c.choice("biome", fam["biomes"], f"biome of {family!r}")
        form = c.choice("growth_form", fam["growth_forms"], f"growth form of {family!r}")
        c.boolean("ask_flowering")
        c.choice("rarity", data["rarity_tiers"], "rarity tier")
        c.choice("soil", data["biomes"][biome]["soils"], f"soil of {biome!r}")
        c.number("max_height_m", *data["growth_forms"][form]["height_m"])

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        skills = ["biome_climate", "growth_form_height", "family_edibility"]
        if params.get("ask_flowering"):
            skills.append("flowering_season")
        if "rarity" in params:
            skills.append("rarity")
        if "soil" in params:
            skills.append("soil_ph")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        asks = ["climate range", "height", "edibility"]
        if params.get("ask_flowering"):
            asks.append("flowering season")
        text = (f"Design a {params['growth_form']} plant of the {params['family']} family "
                f"for the {params['biome']} biome. Give its {', '.join(asks)}.")
        if "max_height_m" in params:
            text += f" It grows no taller than {params['max_height_m']} m."
        if "soil" in params:
            text += f" It grows in {params['soil']} soil; give the soil pH."
        if "rarity" in params:
            text += f" It is {params['rarity']}."
        return text

    # -- expert -----------------------------------------------------------------------------
    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        biome = data["biomes"][params["biome"]]
        form = data["growth_forms"][params["growth_form"]]
        fam = data["families"][params["family"]]
        rarity = params.get("rarity", "common")
        tier = data["rarity_tiers"][rarity]
        height = round((form["height_m"][0] + form["height_m"][1]) / 2, 2)
        height_note = f"take the middle, {height} m"
        if "max_height_m" in params and height > params["max_height_m"]:
            height = params["max_height_m"]
            height_note = f"the task caps it at {height} m, so {height} m"
        soil = params.get("soil", data["biomes"][params["biome"]]["soils"][0])
        ph_range = data["soils"][soil]["ph"]
        ph = round((ph_range[0] + ph_range[1]) / 2, 2)
        spawn = round((tier["spawn_weight"][0] + tier["spawn_weight"][1]) / 2, 3)
        season = fam["flowering_seasons"][0] if fam["flowering_seasons"] else "none"
        t, r = biome["temperature_c"], biome["rainfall_mm"]
        steps = [
            ("Climate", f"The {params['biome']} biome spans {t[0]} to {t[1]} C and {r[0]} to "
                        f"{r[1]} mm of rain; use those ranges."),
            ("Height", f"A {params['growth_form']} grows {form['height_m'][0]} to "
                       f"{form['height_m'][1]} m; {height_note}."),
            ("Soil", f"{soil.capitalize()} soil has pH {ph_range[0]} to {ph_range[1]}; use {ph}."),
            ("Family", f"The {params['family']} family is {fam['edibility']} and flowers in "
                       f"{season}."),
            ("Rarity", f"{rarity.capitalize()} plants spawn with weight "
                       f"{tier['spawn_weight'][0]} to {tier['spawn_weight'][1]}; use {spawn}."),
        ]
        spec = {
            "name": f"{params['biome']} {params['family']} {params['growth_form']}",
            "biome": params["biome"], "family": params["family"],
            "growth_form": params["growth_form"],
            "temperature_c": list(t), "rainfall_mm": list(r), "height_m": height,
            "edibility": fam["edibility"], "flowering_season": season,
            "rarity": rarity, "spawn_weight": spawn, "soil": soil, "soil_ph": ph,
        }
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        failures: list[Failure] = []
        biome = data["biomes"][params["biome"]]
        if spec["biome"] != params["biome"]:
            failures.append(Failure("biome_climate", f"biome is {spec['biome']!r}, task asks {params['biome']!r}"))
        else:
            for key in ("temperature_c", "rainfall_mm"):
                pair = spec[key]
                if len(pair) != 2 or not _within(pair, biome[key]):
                    failures.append(Failure("biome_climate", f"{key} {pair} is not a [min, max] inside {biome[key]}"))
                    break
        form = data["growth_forms"][params["growth_form"]]
        if spec["growth_form"] != params["growth_form"]:
            failures.append(Failure("growth_form_height", f"growth form is {spec['growth_form']!r}, task asks {params['growth_form']!r}"))
        elif not form["height_m"][0] <= spec["height_m"] <= form["height_m"][1]:
            failures.append(Failure("growth_form_height", f"height {spec['height_m']} m is outside {form['height_m']}"))
        elif spec["height_m"] > params.get("max_height_m", float("inf")):
            failures.append(Failure("growth_form_height", f"height {spec['height_m']} m exceeds the cap {params['max_height_m']} m"))
        fam = data["families"][params["family"]]
        if spec["family"] != params["family"]:
            failures.append(Failure("family_edibility", f"family is {spec['family']!r}, task asks {params['family']!r}"))
        elif spec["edibility"] != fam["edibility"]:
            failures.append(Failure("family_edibility", f"{params['family']} is {fam['edibility']}, spec says {spec['edibility']!r}"))
        if "flowering_season" in skills:
            allowed = fam["flowering_seasons"] or ["none"]
            if spec["flowering_season"] not in allowed:
                failures.append(Failure("flowering_season", f"{params['family']} flowers in {allowed}, spec says {spec['flowering_season']!r}"))
        if "rarity" in skills:
            tier = data["rarity_tiers"][params["rarity"]]["spawn_weight"]
            if spec["rarity"] != params["rarity"]:
                failures.append(Failure("rarity", f"rarity is {spec['rarity']!r}, task asks {params['rarity']!r}"))
            elif not tier[0] <= spec["spawn_weight"] <= tier[1]:
                failures.append(Failure("rarity", f"spawn weight {spec['spawn_weight']} is outside {tier}"))
        if "soil_ph" in skills:
            ph_range = data["soils"][params["soil"]]["ph"]
            if spec["soil"] != params["soil"]:
                failures.append(Failure("soil_ph", f"soil is {spec['soil']!r}, task asks {params['soil']!r}"))
            elif not ph_range[0] <= spec["soil_ph"] <= ph_range[1]:
                failures.append(Failure("soil_ph", f"soil pH {spec['soil_ph']} is outside {ph_range}"))
        return failures

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        out = copy.deepcopy(spec)
        if skill == "biome_climate":
            out["temperature_c"] = [out["temperature_c"][0], data["biomes"][params["biome"]]["temperature_c"][1] + 10]
        elif skill == "growth_form_height":
            out["height_m"] = data["growth_forms"][params["growth_form"]]["height_m"][1] * 2 + 1
        elif skill == "family_edibility":
            out["edibility"] = next(e for e in EDIBILITY if e != out["edibility"])
        elif skill == "flowering_season":
            allowed = data["families"][params["family"]]["flowering_seasons"] or ["none"]
            out["flowering_season"] = next(s for s in data["seasons"] + ["none"] if s not in allowed)
        elif skill == "rarity":
            out["spawn_weight"] = data["rarity_tiers"][params["rarity"]]["spawn_weight"][1] + 0.3
        elif skill == "soil_ph":
            out["soil_ph"] = data["soils"][params["soil"]]["ph"][1] + 1.5
        else:
            raise KeyError(f"plant has no skill {skill!r}")
        return out
