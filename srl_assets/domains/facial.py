"""Facial domain: EMFACS prototypes as FACS action units, A-E intensities, ARKit blendshapes, body language."""

from __future__ import annotations

import copy
import random
import re
from typing import Any

from srl_assets.domains.base import (Domain, Failure, ParamsChecker, ParamsError, Plan, Rules,
                                      RulesValidator)

LETTERS = ("A", "B", "C", "D", "E")
N_ARKIT = 52
SIDES = {"left": "L", "right": "R"}
SUFFIX = {"L": "Left", "R": "Right"}
#: a FACS code as written in a spec: optional side prefix, AU number, intensity letter ("L12C").
CODE_RE = re.compile(r"^([LR]?)([0-9]{1,2})([A-E])$")


def _twin(name: str) -> str | None:
    if name.endswith("Left"):
        return name[:-4] + "Right"
    if name.endswith("Right"):
        return name[:-5] + "Left"
    return None


def _parse_codes(codes: list[str]) -> tuple[dict[int, tuple[str, str]], list[str]]:
    """AU -> (side prefix, letter), and the codes that are unreadable or repeat an AU."""
    parsed: dict[int, tuple[str, str]] = {}
    bad: list[str] = []
    for code in codes:
        m = CODE_RE.fullmatch(code)
        if not m or int(m.group(2)) in parsed:
            bad.append(code)
            continue
        parsed[int(m.group(2))] = (m.group(1), m.group(3))
    return parsed, bad


def _names(shapes: list[str]) -> str:
    """``browDownLeft/Right`` for a Left/Right pair, else the names joined with 'and'."""
    if len(shapes) == 2 and _twin(shapes[0]) == shapes[1] and shapes[0].endswith("Left"):
        return f"{shapes[0]}/Right"
    return " and ".join(shapes)


class FacialDomain(Domain):
    name = "facial"
    skills = {
        "action_units": "the coded AUs are exactly the emotion's EMFACS prototype plus any asked variant and gaze AU",
        "au_intensity": "every emotion AU is coded at the asked FACS intensity letter",
        "blendshape_mapping": "every blendshape is an ARKit name mapped from a coded AU, and every coded AU has its blendshapes",
        "blendshape_weights": "every weight lies in 0-1 and in the weight band of its AU's intensity letter",
        "laterality": "paired blendshapes are symmetric; contempt is coded and shaped on the asked side only",
        "gaze": "the asked gaze AU is coded at its intensity and its eye blendshapes carry the matching weight",
        "body_language": "posture and gesture are ones the emotion shows",
    }
    spec_shape = {
        "emotion": str, "intensity": str, "action_units": [str], "blendshapes": ("map", float),
        "posture": str, "gesture": str,
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        aus = v.mapping("data.action_units")
        for code in aus:
            if not code.isdigit():
                raise v.fail(f"data.action_units.{code}", "AU codes must be quoted numbers like \"12\"")
            v.string(f"data.action_units.{code}")
        intensities = v.mapping("data.intensities")
        if sorted(intensities) != list(LETTERS):
            raise v.fail("data.intensities", f"must name exactly the FACS letters {list(LETTERS)}")
        for letter in LETTERS:
            p = f"data.intensities.{letter}"
            v.string(f"{p}.label")
            lo, hi = v.number_range(f"{p}.band", lo=0, hi=1)
            v.number(f"{p}.weight", lo=lo, hi=hi)
        arkit = v.strings("data.arkit_blendshapes")
        if len(arkit) != N_ARKIT or len(set(arkit)) != N_ARKIT:
            raise v.fail("data.arkit_blendshapes", f"must list exactly {N_ARKIT} unique names, "
                                                   f"got {len(arkit)} ({len(set(arkit))} unique)")
        mapping = v.mapping("data.au_blendshapes")
        owner: dict[str, str] = {}
        for code in mapping:
            p = f"data.au_blendshapes.{code}"
            if code not in aus:
                raise v.fail(p, f"unknown AU {code!r}; known: {sorted(aus, key=int)}")
            shapes = v.strings(p, choices=arkit)
            if len(shapes) > 2:
                raise v.fail(p, f"maps to {len(shapes)} blendshapes; at most 2 keep specs compact")
            for shape in shapes:
                if shape in owner:
                    raise v.fail(p, f"blendshape {shape!r} is already mapped from AU{owner[shape]}")
                owner[shape] = code
        prototypes = v.mapping("data.emfacs_prototypes")
        for emo in prototypes:
            for i, _ in enumerate(v.sequence(f"data.emfacs_prototypes.{emo}")):
                self._mapped_au(v, f"data.emfacs_prototypes.{emo}[{i}]", aus, mapping)
        v.strings("data.unilateral", choices=prototypes)
        gaze = v.mapping("data.gaze")
        for direction in gaze:
            self._mapped_au(v, f"data.gaze.{direction}", aus, mapping)
        emotions = v.mapping("data.emotions")
        if set(emotions) != set(prototypes):
            raise v.fail("data.emotions", f"must describe exactly the prototypes {sorted(prototypes)}")
        for emo in emotions:
            p = f"data.emotions.{emo}"
            for i, _ in enumerate(v.sequence(f"{p}.variants", non_empty=False)):
                au = self._mapped_au(v, f"{p}.variants[{i}]", aus, mapping)
                if au in prototypes[emo]:
                    raise v.fail(f"{p}.variants[{i}]", f"AU{au} is already in the {emo} prototype")
            v.strings(f"{p}.postures")
            v.strings(f"{p}.gestures")
            v.string(f"{p}.lore")
        v.number("data.max_blendshapes_with_gaze", lo=0, integer=True)

    @staticmethod
    def _mapped_au(v: RulesValidator, path: str, aus: dict[str, Any], mapping: dict[str, Any]) -> int:
        au = v.number(path, lo=1, integer=True)
        if str(au) not in aus:
            raise v.fail(path, f"unknown AU {au}; known: {sorted(aus, key=int)}")
        if str(au) not in mapping:
            raise v.fail(path, f"AU{au} has no blendshapes in data.au_blendshapes")
        return au

    # -- helpers over validated rules -------------------------------------------------------
    @staticmethod
    def _shapes(rules: Rules, au: int, side: str = "") -> list[str]:
        shapes = rules.data["au_blendshapes"].get(str(au), [])
        return [s for s in shapes if s.endswith(SUFFIX[side])] if side else list(shapes)

    @staticmethod
    def _owners(rules: Rules) -> dict[str, int]:
        return {s: int(au) for au, shapes in rules.data["au_blendshapes"].items() for s in shapes}

    @staticmethod
    def _emotion_aus(params: dict[str, Any], rules: Rules) -> list[int]:
        aus = list(rules.data["emfacs_prototypes"][params["emotion"]])
        return aus + [params["variant"]] if "variant" in params else aus

    @staticmethod
    def _side(params: dict[str, Any], rules: Rules) -> str:
        return SIDES[params["side"]] if params["emotion"] in rules.data["unilateral"] else ""

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        emotion = rng.choice(sorted(data["emfacs_prototypes"]))
        params: dict[str, Any] = {"emotion": emotion, "intensity": rng.choice(LETTERS),
                                  "ask_body": rng.random() < 0.7}
        if emotion in data["unilateral"]:
            params["side"] = rng.choice(sorted(SIDES))
        variants = data["emotions"][emotion]["variants"]
        if variants and rng.random() < 0.5:
            params["variant"] = rng.choice(variants)
        side = self._side(params, rules)
        n_shapes = sum(len(self._shapes(rules, au, side)) for au in self._emotion_aus(params, rules))
        if n_shapes <= data["max_blendshapes_with_gaze"] and rng.random() < 0.6:
            params["gaze"] = rng.choice(sorted(data["gaze"]))
            params["gaze_intensity"] = rng.choice(LETTERS)
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        c.keys({"emotion", "intensity", "ask_body"}, {"side", "variant", "gaze", "gaze_intensity"})
        emotion = c.choice("emotion", data["emfacs_prototypes"], "emotion")
        c.choice("intensity", LETTERS, "intensity letter")
        c.boolean("ask_body")
        if emotion in data["unilateral"]:
            if "side" not in params:
                raise ParamsError("side", f"is required for the unilateral emotion {emotion!r}")
            c.choice("side", SIDES, "side")
        elif "side" in params:
            raise ParamsError("side", f"only unilateral emotions {sorted(data['unilateral'])} take a side")
        c.choice("variant", data["emotions"][emotion]["variants"], f"variant of {emotion!r}")
        if ("gaze" in params) != ("gaze_intensity" in params):
            raise ParamsError("gaze_intensity" if "gaze" in params else "gaze",
                              "gaze and gaze_intensity go together")
        if "gaze" in params:
            c.choice("gaze", data["gaze"], "gaze")
            c.choice("gaze_intensity", LETTERS, "intensity letter")
            side = self._side(params, rules)
            n_shapes = sum(len(self._shapes(rules, au, side)) for au in self._emotion_aus(params, rules))
            if n_shapes > data["max_blendshapes_with_gaze"]:
                raise ParamsError("gaze", f"{emotion!r} already uses {n_shapes} blendshapes, more than the "
                                          f"{data['max_blendshapes_with_gaze']} that leave room for gaze")

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        skills = ["action_units", "au_intensity", "blendshape_mapping", "blendshape_weights", "laterality"]
        if "gaze" in params:
            skills.append("gaze")
        if params.get("ask_body"):
            skills.append("body_language")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        text = f"Animate a {params['emotion']} face at FACS intensity {params['intensity']}"
        text += f", on the {params['side']} side only." if "side" in params else "."
        if "variant" in params:
            text += f" Add the EMFACS variant AU{params['variant']}."
        if "gaze" in params:
            text += f" The eyes look {params['gaze']} at intensity {params['gaze_intensity']}."
        text += " Give AUs and ARKit blendshapes"
        text += ", posture and gesture." if params.get("ask_body") else "."
        return text

    # -- expert -----------------------------------------------------------------------------
    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        emotion, letter = params["emotion"], params["intensity"]
        level = data["intensities"][letter]
        side = self._side(params, rules)
        prototype = data["emfacs_prototypes"][emotion]
        aus = self._emotion_aus(params, rules)
        proto_text = f"EMFACS {emotion} is AU{'+'.join(str(a) for a in prototype)}"
        if side:
            proto_text += f", on the {params['side']} side only"
        if "variant" in params:
            proto_text += f"; the variant adds AU{params['variant']}"
        steps = [
            ("Prototype", proto_text + "."),
            ("Intensity", f"Code each AU at {letter} ({level['label']}); {letter} means weight "
                          f"{level['band'][0]} to {level['band'][1]}, so {level['weight']}."),
        ]
        codes = [f"{side}{au}{letter}" for au in aus]
        shapes = {s: level["weight"] for au in aus for s in self._shapes(rules, au, side)}
        mapped = ", ".join(f"{side + str(au) if side else f'AU{au}'} is {_names(self._shapes(rules, au, side))}"
                           for au in aus)
        if side:
            steps.append(("Blendshapes", f"One side only: {mapped}."))
        else:
            steps.append(("Blendshapes", f"{mapped}; Left and Right equal."))
        if "gaze" in params:
            gaze_au, gaze_letter = data["gaze"][params["gaze"]], params["gaze_intensity"]
            gaze_weight = data["intensities"][gaze_letter]["weight"]
            gaze_shapes = self._shapes(rules, gaze_au)
            codes.append(f"{gaze_au}{gaze_letter}")
            shapes.update({s: gaze_weight for s in gaze_shapes})
            steps.append(("Gaze", f"Eyes {params['gaze']} is AU{gaze_au} at {gaze_letter}: "
                                  f"{' and '.join(gaze_shapes)} at {gaze_weight}."))
        body = data["emotions"][emotion]
        posture, gesture = body["postures"][0], body["gestures"][0]
        steps.append(("Body", f"{emotion.capitalize()} body language: {posture} posture, {gesture}."))
        spec = {"emotion": emotion, "intensity": letter, "action_units": codes,
                "blendshapes": dict(sorted(shapes.items())), "posture": posture, "gesture": gesture}
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        failures: list[Failure] = []
        parsed, bad = _parse_codes(spec["action_units"])
        gaze_aus = set(data["gaze"].values())
        emotion_aus = [au for au in parsed if au not in gaze_aus]
        shapes: dict[str, float] = spec["blendshapes"]
        owners = self._owners(rules)
        bands = {letter: data["intensities"][letter]["band"] for letter in LETTERS}

        # action_units: the set of coded AUs
        expected = set(self._emotion_aus(params, rules))
        if "gaze" in params:
            expected.add(data["gaze"][params["gaze"]])
        if spec["emotion"] != params["emotion"]:
            failures.append(Failure("action_units", f"emotion is {spec['emotion']!r}, task asks {params['emotion']!r}"))
        elif bad:
            failures.append(Failure("action_units", f"unreadable or repeated AU codes {bad[:4]}"))
        elif set(parsed) != expected:
            failures.append(Failure("action_units", f"AUs should be {sorted(expected)}, got {sorted(parsed)}"))

        # au_intensity: the letter of every emotion AU
        letter = params["intensity"]
        off = [au for au in emotion_aus if parsed[au][1] != letter]
        if spec["intensity"] != letter:
            failures.append(Failure("au_intensity", f"intensity is {spec['intensity']!r}, task asks {letter!r}"))
        elif off:
            failures.append(Failure("au_intensity", f"AU{off[0]} is coded {parsed[off[0]][1]}, task asks {letter}"))

        # blendshape_mapping: names known and owned by coded AUs, every coded AU shown
        unknown = [s for s in shapes if s not in data["arkit_blendshapes"]]
        stray = [s for s in shapes if owners.get(s) not in parsed]
        unshown = [au for au in parsed if str(au) in data["au_blendshapes"]
                   and not any(s in shapes for s in self._shapes(rules, au))]
        if unknown:
            failures.append(Failure("blendshape_mapping", f"not ARKit blendshapes: {unknown[:4]}"))
        elif stray:
            failures.append(Failure("blendshape_mapping", f"{stray[:4]} belong to no coded AU"))
        elif unshown:
            failures.append(Failure("blendshape_mapping", f"AU{unshown[0]} has none of its blendshapes "
                                                          f"{self._shapes(rules, unshown[0])}"))

        # blendshape_weights: 0-1 and inside the band of the owning emotion AU's letter
        outside = [s for s, w in shapes.items() if not 0 <= w <= 1]
        misweighted = [s for s, w in shapes.items() if owners.get(s) in emotion_aus
                       and not bands[parsed[owners[s]][1]][0] <= w <= bands[parsed[owners[s]][1]][1]]
        if outside:
            failures.append(Failure("blendshape_weights", f"weights outside 0-1: {outside[:4]}"))
        elif misweighted:
            s = misweighted[0]
            lt = parsed[owners[s]][1]
            failures.append(Failure("blendshape_weights", f"{s} {shapes[s]} is outside AU{owners[s]}{lt}'s band {bands[lt]}"))

        # laterality: contempt on one side, everything else symmetric
        failures += self._check_laterality(params, rules, parsed, emotion_aus, shapes, owners)

        if "gaze" in skills:
            failures += self._check_gaze(params, rules, parsed, shapes, bands)
        if "body_language" in skills:
            body = data["emotions"][params["emotion"]]
            if spec["posture"] not in body["postures"]:
                failures.append(Failure("body_language", f"{params['emotion']} postures are {body['postures']}, "
                                                         f"spec says {spec['posture']!r}"))
            elif spec["gesture"] not in body["gestures"]:
                failures.append(Failure("body_language", f"{params['emotion']} gestures are {body['gestures']}, "
                                                         f"spec says {spec['gesture']!r}"))
        return failures

    def _check_laterality(self, params: dict[str, Any], rules: Rules, parsed: dict[int, tuple[str, str]],
                          emotion_aus: list[int], shapes: dict[str, float],
                          owners: dict[str, int]) -> list[Failure]:
        side = self._side(params, rules)
        owned = [s for s in shapes if owners.get(s) in emotion_aus]
        wrong_prefix = [au for au in emotion_aus if parsed[au][0] != side]
        if wrong_prefix:
            want = f"prefix {side!r}" if side else "no side prefix"
            return [Failure("laterality", f"AU{wrong_prefix[0]} should carry {want}")]
        if side:
            other = SUFFIX["R" if side == "L" else "L"]
            wrong_side = [s for s in owned if s.endswith(other)]
            if wrong_side:
                return [Failure("laterality", f"{params['emotion']} is on the {params['side']} side; "
                                              f"{wrong_side[:3]} is on the other")]
            return []
        for s in owned:
            twin = _twin(s)
            if twin is not None and (twin not in shapes or shapes[twin] != shapes[s]):
                return [Failure("laterality", f"{s} {shapes[s]} needs its twin {twin} at the same weight")]
        return []

    def _check_gaze(self, params: dict[str, Any], rules: Rules, parsed: dict[int, tuple[str, str]],
                    shapes: dict[str, float], bands: dict[str, list[float]]) -> list[Failure]:
        gaze_au = rules.data["gaze"][params["gaze"]]
        letter = params["gaze_intensity"]
        others = [au for au in parsed if au in rules.data["gaze"].values() and au != gaze_au]
        if gaze_au not in parsed:
            return [Failure("gaze", f"eyes {params['gaze']} needs AU{gaze_au}")]
        if others:
            return [Failure("gaze", f"AU{others[0]} looks another way than {params['gaze']}")]
        if parsed[gaze_au][1] != letter:
            return [Failure("gaze", f"AU{gaze_au} is coded {parsed[gaze_au][1]}, task asks {letter}")]
        lo, hi = bands[letter]
        for s in self._shapes(rules, gaze_au):
            if s not in shapes or not lo <= shapes[s] <= hi:
                return [Failure("gaze", f"{s} must weigh {lo} to {hi}, got {shapes.get(s)}")]
        return []

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        out = copy.deepcopy(spec)
        side = self._side(params, rules)
        prototype = data["emfacs_prototypes"][params["emotion"]]
        first = prototype[0]

        def recode(au: int, new_letter: str, prefix: str = "") -> None:
            """Re-code one AU at another letter, its blendshapes moved to that letter's weight."""
            out["action_units"] = [f"{prefix}{au}{new_letter}" if _parse_codes([c])[0].get(au) else c
                                   for c in out["action_units"]]
            for s in self._shapes(rules, au):
                if s in out["blendshapes"]:
                    out["blendshapes"][s] = data["intensities"][new_letter]["weight"]

        if skill == "action_units":  # drop the last prototype AU with its blendshapes
            au = prototype[-1]
            out["action_units"] = [c for c in out["action_units"] if _parse_codes([c])[0].get(au) is None]
            for s in self._shapes(rules, au):
                out["blendshapes"].pop(s, None)
        elif skill == "au_intensity":
            recode(first, rng.choice([x for x in LETTERS if x != params["intensity"]]), side)
        elif skill == "blendshape_mapping":  # a real ARKit name that no coded AU drives
            out["blendshapes"]["tongueOut"] = data["intensities"][params["intensity"]]["weight"]
        elif skill == "blendshape_weights":
            lo, _ = data["intensities"][params["intensity"]]["band"]
            for s in self._shapes(rules, first, side):
                out["blendshapes"][s] = 0.05 if lo >= 0.5 else 0.95
        elif skill == "laterality":
            owned = [s for au in self._emotion_aus(params, rules) for s in self._shapes(rules, au, side)]
            paired = next(s for s in owned if _twin(s))
            if side:  # show the contempt shape on the other side as well
                out["blendshapes"][_twin(paired)] = out["blendshapes"][paired]
            else:
                out["blendshapes"].pop(_twin(paired))
        elif skill == "gaze":
            recode(data["gaze"][params["gaze"]],
                   rng.choice([x for x in LETTERS if x != params["gaze_intensity"]]))
        elif skill == "body_language":
            mine = data["emotions"][params["emotion"]]["postures"]
            out["posture"] = next(p for e in data["emotions"].values() for p in e["postures"] if p not in mine)
        else:
            raise KeyError(f"facial has no skill {skill!r}")
        return out
