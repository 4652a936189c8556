"""Personality domain: Plutchik emotions and intensities, expression, Big Five traits, faction ideals."""

from __future__ import annotations

import copy
import random
from typing import Any

from srl_assets.domains.base import (Domain, Failure, ParamsChecker, ParamsError, Plan, Rules,
                                      RulesValidator)

TRAIT_NAMES = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
OPPOSITE = {"high": "low", "low": "high"}


def _mid(pair: list[float]) -> float:
    return round((pair[0] + pair[1]) / 2, 2)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class PersonalityDomain(Domain):
    name = "personality"
    skills = {
        "emotion_intensity": "the emotion word is Plutchik's word for the primary emotion at the asked intensity",
        "facial_expression": "the facial expression is the one of that emotion word",
        "vocal_tone": "valence is the emotion's valence and the vocal tone is one of the emotion's tones",
        "emotion_action": "the action is one of Plutchik's behaviours for the primary emotion",
        "big_five": "all five trait scores lie in 0-1 and the asked high/low traits lie in their level's range",
        "trait_behavior": "behaviour shows each asked trait level and nothing of the opposite level",
        "faction_ideals": "the character is of the asked faction, holds all its ideals and none it rejects",
    }
    spec_shape = {
        "primary": str, "emotion": str, "valence": str, "facial": str, "vocal": str, "action": str,
        "traits": ("map", float), "behavior": [str], "faction": str, "ideals": [str],
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        levels = v.strings("data.intensity_levels")
        valences = set(v.strings("data.valences"))
        tones = v.mapping("data.vocal_tones")
        for tone in tones:
            v.string(f"data.vocal_tones.{tone}", choices=valences)
        emotions = v.mapping("data.emotions")
        for emo in emotions:
            p = f"data.emotions.{emo}"
            valence = v.string(f"{p}.valence", choices=valences)
            for key in ("intensities", "facial"):
                table = v.mapping(f"{p}.{key}")
                for level in levels:
                    v.string(f"{p}.{key}.{level}")
                extra = set(table) - set(levels)
                if extra:
                    raise v.fail(f"{p}.{key}", f"unknown intensity levels {sorted(extra)}; expected {levels}")
            for i, _ in enumerate(v.sequence(f"{p}.vocal")):
                tone = v.reference(f"{p}.vocal[{i}]", tones, "vocal tone")
                if tones[tone] != valence:
                    raise v.fail(f"{p}.vocal[{i}]", f"tone {tone!r} is {tones[tone]}, but {emo} is {valence}")
            v.strings(f"{p}.actions")
            v.string(f"{p}.function")
            v.string(f"{p}.lore")
        trait_levels = v.mapping("data.trait_levels")
        for level in OPPOSITE:
            v.number_range(f"data.trait_levels.{level}", lo=0, hi=1)
        if set(trait_levels) != set(OPPOSITE):
            raise v.fail("data.trait_levels", f"must name exactly {sorted(OPPOSITE)}")
        if trait_levels["low"][1] >= trait_levels["high"][0]:
            raise v.fail("data.trait_levels", "the low range must lie below the high range")
        v.number("data.default_trait_score", lo=0, hi=1)
        traits = v.mapping("data.traits")
        if set(traits) != set(TRAIT_NAMES):
            raise v.fail("data.traits", f"must name exactly the Big Five {list(TRAIT_NAMES)}")
        for trait in TRAIT_NAMES:
            for level in OPPOSITE:
                v.strings(f"data.traits.{trait}.{level}")
            v.string(f"data.traits.{trait}.lore")
        ideals = set(v.strings("data.ideals"))
        for fac in v.mapping("data.factions"):
            p = f"data.factions.{fac}"
            v.string(f"{p}.title")
            held = v.strings(f"{p}.ideals", choices=ideals)
            rejected = v.strings(f"{p}.rejects", choices=ideals)
            both = set(held) & set(rejected)
            if both:
                raise v.fail(f"{p}.rejects", f"rejects ideals it holds: {sorted(both)}")
            v.string(f"{p}.lore")

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        params: dict[str, Any] = {
            "emotion": rng.choice(sorted(data["emotions"])),
            "intensity": rng.choice(data["intensity_levels"]),
            "ask_action": rng.random() < 0.7,
        }
        n_traits = rng.choices([0, 1, 2], weights=[1, 2, 2])[0]
        if n_traits:
            chosen = rng.sample(TRAIT_NAMES, n_traits)
            params["traits"] = {t: rng.choice(["high", "low"]) for t in chosen}
        if rng.random() < 0.6:
            params["faction"] = rng.choice(sorted(data["factions"]))
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        c.keys({"emotion", "intensity", "ask_action"}, {"traits", "faction"})
        c.choice("emotion", data["emotions"], "emotion")
        c.choice("intensity", data["intensity_levels"], "intensity level")
        c.boolean("ask_action")
        c.choice("faction", data["factions"], "faction")
        traits = c.mapping("traits")
        for trait, level in (traits or {}).items():
            if trait not in TRAIT_NAMES:
                raise ParamsError(f"traits.{trait}", f"unknown trait; allowed: {list(TRAIT_NAMES)}")
            if level not in OPPOSITE:
                raise ParamsError(f"traits.{trait}", f"must be 'high' or 'low', got {level!r}")

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        skills = ["emotion_intensity", "facial_expression", "vocal_tone", "big_five"]
        if params.get("ask_action"):
            skills.append("emotion_action")
        if params.get("traits"):
            skills.append("trait_behavior")
        if "faction" in params:
            skills.append("faction_ideals")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        text = (f"Create a character feeling {params['emotion']} at {params['intensity']} intensity; "
                f"give the emotion word, face, voice")
        text += ", action and Big Five scores." if params.get("ask_action") else " and Big Five scores."
        traits = params.get("traits") or {}
        if traits:
            text += f" They have {_and([f'{lvl} {t}' for t, lvl in traits.items()])}; give their behaviour."
        if "faction" in params:
            text += f" They belong to the {rules.data['factions'][params['faction']]['title']}."
        return text

    # -- expert -----------------------------------------------------------------------------
    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        emo_name, level = params["emotion"], params["intensity"]
        emo = data["emotions"][emo_name]
        word, facial = emo["intensities"][level], emo["facial"][level]
        tone, action = emo["vocal"][0], emo["actions"][0]
        steps = [
            ("Emotion", f"{emo_name.capitalize()} at {level} intensity is {word}, a {emo['valence']} emotion."),
            ("Expression", f"{word.capitalize()} shows {facial}; a {tone} voice fits its {emo['valence']} valence."),
            ("Action", f"Plutchik's {emo_name} serves {emo['function']}, so the action is {action}."),
        ]
        asked = params.get("traits") or {}
        default = data["default_trait_score"]
        scores = {t: default for t in TRAIT_NAMES}
        notes, behavior = [], []
        for trait, lvl in asked.items():
            rng_ = data["trait_levels"][lvl]
            scores[trait] = _mid(rng_)
            notes.append(f"{lvl} {trait} is {rng_[0]} to {rng_[1]}, so {scores[trait]}")
            behavior.append(data["traits"][trait][lvl][0])
        if asked:
            joined = "; ".join(notes)
            steps.append(("Traits", f"{joined[0].upper()}{joined[1:]}; the rest {default}."))
            shows = "; ".join(f"{lvl} {t} {b}" for (t, lvl), b in zip(asked.items(), behavior))
            steps.append(("Behaviour", f"{shows[0].upper()}{shows[1:]}."))
        else:
            steps.append(("Traits", f"No trait is set, so all five Big Five scores are {default}."))
        faction, ideals = "none", []
        if "faction" in params:
            faction = params["faction"]
            fac = data["factions"][faction]
            ideals = list(fac["ideals"])
            steps.append(("Faction", f"The {fac['title']} holds {_and(ideals)} and rejects {_and(fac['rejects'])}."))
        spec = {
            "primary": emo_name, "emotion": word, "valence": emo["valence"], "facial": facial,
            "vocal": tone, "action": action, "traits": scores, "behavior": behavior,
            "faction": faction, "ideals": ideals,
        }
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        failures: list[Failure] = []
        emo_name, level = params["emotion"], params["intensity"]
        emo = data["emotions"][emo_name]
        word = emo["intensities"][level]
        if spec["primary"] != emo_name:
            failures.append(Failure("emotion_intensity", f"primary is {spec['primary']!r}, task asks {emo_name!r}"))
        elif spec["emotion"] != word:
            failures.append(Failure("emotion_intensity", f"{level} {emo_name} is {word!r}, spec says {spec['emotion']!r}"))
        if spec["facial"] != emo["facial"][level]:
            failures.append(Failure("facial_expression", f"{word} shows {emo['facial'][level]!r}, spec says {spec['facial']!r}"))
        if spec["valence"] != emo["valence"]:
            failures.append(Failure("vocal_tone", f"{emo_name} is {emo['valence']}, spec says {spec['valence']!r}"))
        elif spec["vocal"] not in emo["vocal"]:
            tone_valence = data["vocal_tones"].get(spec["vocal"], "unknown")
            failures.append(Failure("vocal_tone", f"voice {spec['vocal']!r} ({tone_valence}) does not fit "
                                                  f"{emo_name}; use one of {emo['vocal']}"))
        if "emotion_action" in skills and spec["action"] not in emo["actions"]:
            failures.append(Failure("emotion_action", f"{emo_name} drives {emo['actions']}, spec says {spec['action']!r}"))
        failures += self._check_traits(params, spec, rules, skills)
        if "faction_ideals" in skills:
            fac = data["factions"][params["faction"]]
            held = set(spec["ideals"])
            if spec["faction"] != params["faction"]:
                failures.append(Failure("faction_ideals", f"faction is {spec['faction']!r}, task asks {params['faction']!r}"))
            elif not set(fac["ideals"]) <= held:
                missing = [i for i in fac["ideals"] if i not in held]
                failures.append(Failure("faction_ideals", f"{fac['title']} ideals missing: {missing}"))
            elif held & set(fac["rejects"]):
                failures.append(Failure("faction_ideals", f"{fac['title']} rejects {sorted(held & set(fac['rejects']))}"))
        return failures

    def _check_traits(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
                      skills: list[str]) -> list[Failure]:
        data = rules.data
        failures: list[Failure] = []
        asked = params.get("traits") or {}
        scores = spec["traits"]
        if set(scores) != set(TRAIT_NAMES):
            failures.append(Failure("big_five", f"traits must be exactly {list(TRAIT_NAMES)}, got {sorted(scores)[:8]}"))
        else:
            bad = [t for t in TRAIT_NAMES if not 0 <= scores[t] <= 1]
            off = [t for t, lvl in asked.items()
                   if not data["trait_levels"][lvl][0] <= scores[t] <= data["trait_levels"][lvl][1]]
            if bad:
                failures.append(Failure("big_five", f"scores outside 0-1: {bad}"))
            elif off:
                t = off[0]
                failures.append(Failure("big_five", f"{asked[t]} {t} must lie in {data['trait_levels'][asked[t]]}, "
                                                    f"got {scores[t]}"))
        if "trait_behavior" in skills:
            shown = set(spec["behavior"])
            for trait, lvl in asked.items():
                table = data["traits"][trait]
                if not shown & set(table[lvl]):
                    failures.append(Failure("trait_behavior", f"{lvl} {trait} shows one of {table[lvl]}"))
                    break
                if shown & set(table[OPPOSITE[lvl]]):
                    failures.append(Failure("trait_behavior", f"{lvl} {trait} contradicts "
                                                              f"{sorted(shown & set(table[OPPOSITE[lvl]]))}"))
                    break
        return failures

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        out = copy.deepcopy(spec)
        emo = data["emotions"][params["emotion"]]
        others = [lvl for lvl in data["intensity_levels"] if lvl != params["intensity"]]
        if skill == "emotion_intensity":
            out["emotion"] = emo["intensities"][rng.choice(others)]
        elif skill == "facial_expression":
            out["facial"] = emo["facial"][rng.choice(others)]
        elif skill == "vocal_tone":  # a tone of another valence, e.g. cheerful for a negative emotion
            out["vocal"] = next(t for t, val in data["vocal_tones"].items() if val != emo["valence"])
        elif skill == "emotion_action":
            out["action"] = next(a for e in data["emotions"].values() for a in e["actions"]
                                 if a not in emo["actions"])
        elif skill == "big_five":
            asked = params.get("traits") or {}
            if asked:
                trait, lvl = next(iter(asked.items()))
                out["traits"][trait] = _mid(data["trait_levels"][OPPOSITE[lvl]])
            else:
                out["traits"]["openness"] = 1.4
        elif skill == "trait_behavior":
            trait, lvl = next(iter(params["traits"].items()))
            out["behavior"] = [data["traits"][trait][OPPOSITE[lvl]][0]] + out["behavior"][1:]
        elif skill == "faction_ideals":
            out["ideals"] = out["ideals"] + [data["factions"][params["faction"]]["rejects"][0]]
        else:
            raise KeyError(f"personality has no skill {skill!r}")
        return out
