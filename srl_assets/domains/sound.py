"""Sound domain: biome ambience layered from coloured noise, and soundtrack specs.

Two kinds of task share one spec shape (kind-specific keys are optional):

* ``ambience``: the layers of a biome at a time of day (plus a weather layer), each with its
  noise colour, the colour's spectral slope in dB/octave and a gain in dB;
* ``soundtrack``: tempo and mode by mood, key, meter and instruments by culture and, for a cue,
  its length, which must be a whole number of bars when the cue loops.
"""

from __future__ import annotations

import copy
import math
import random
import re
from typing import Any

from srl_assets.domains.base import (Domain, Failure, ParamsChecker, ParamsError, Plan, Rules,
                                      RulesValidator)

MODES = ("major", "minor")
METER_RE = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{1,2})\s*$")
NOTE_VALUES = (1, 2, 4, 8, 16, 32)  # the lower number of a time signature
MAX_TEMPO_BPM = 1000  # beyond this no bar arithmetic is attempted (model output can be absurd)
TEACHER_INSTRUMENTS = 3  # the expert takes the culture's first three instruments
AMBIENCE_SKILLS = ("biome_layers", "noise_colour", "layer_gain")
SOUNDTRACK_SKILLS = ("mood_tempo", "key_mode", "culture_style", "loop_duration")


def _g(x: float) -> str:
    return f"{x:g}"


def _signed(x: float) -> str:
    """A slope as the lore writes it: 0, -3, +6."""
    return f"{x:+g}" if x else "0"


def _norm(value: Any) -> str:
    """Names compare loosely: 'Wind in leaves' == 'wind_in_leaves'."""
    return value.strip().lower().replace(" ", "_") if isinstance(value, str) else ""


def _words(name: str) -> str:
    return name.replace("_", " ")


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def parse_meter(meter: Any) -> tuple[int, int] | None:
    """'6/8' -> (6, 8); None for anything that is not a time signature."""
    m = METER_RE.match(meter) if isinstance(meter, str) else None
    if not m:
        return None
    beats, value = int(m.group(1)), int(m.group(2))
    return (beats, value) if beats >= 1 and value in NOTE_VALUES else None


def bar_seconds(beats: int, value: int, tempo_bpm: float) -> float:
    """A bar of beats/value at quarter notes per minute lasts 240*beats/(value*BPM) s."""
    return 240 * beats / (value * tempo_bpm)


def expected_layers(params: dict[str, Any], rules: Rules) -> list[dict[str, Any]]:
    """The biome's layers at the task's time of day, then the weather layer: name, noise, gain."""
    data = rules.data
    layers = [{"sound": name, "noise": layer["noise"], "gain_db": layer["gain_db"]}
              for name, layer in data["biomes"][params["biome"]]["layers"].items()
              if params["time"] in layer["times"]]
    if "weather" in params:
        w = data["weather"][params["weather"]]
        layers.append({"sound": w["sound"], "noise": w["noise"], "gain_db": w["gain_db"]})
    return layers


def teacher_instruments(rules: Rules, culture: str) -> list[str]:
    lo, hi = rules.data["instruments_per_track"]
    n = min(max(TEACHER_INSTRUMENTS, lo), hi)
    return list(rules.data["cultures"][culture]["instruments"][:n])


class SoundDomain(Domain):
    name = "sound"
    skills = {
        "biome_layers": "the ambience has exactly the biome's layers for the time of day, plus "
                        "the weather's layer",
        "noise_colour": "each layer's noise colour is its sound's, and its slope is the colour's "
                        "dB/octave (white 0, pink -3, brown -6, blue +3, violet +6)",
        "layer_gain": "each layer's gain in dB lies in its range",
        "mood_tempo": "the soundtrack's tempo lies in the mood's BPM range",
        "key_mode": "the mode is the mood's and the key is the requested (or a valid) key",
        "culture_style": "the meter is one of the culture's and 2-4 instruments, all of the "
                         "culture's",
        "loop_duration": "the cue's length lies in its range, it loops as the cue does, and a "
                         "loop lasts a whole number of bars at its tempo and meter",
    }
    spec_shape = {
        "kind": str,
        "biome": ("optional", str),
        "layers": ("optional", [{"sound": str, "noise": str, "slope_db": float, "gain_db": float}]),
        "mood": ("optional", str),
        "culture": ("optional", str),
        "tempo_bpm": ("optional", float),
        "key": ("optional", str),
        "mode": ("optional", str),
        "meter": ("optional", str),
        "instruments": ("optional", [str]),
        "cue": ("optional", str),
        "duration_s": ("optional", float),
        "loop": ("optional", bool),
    }

    # -- rules ------------------------------------------------------------------------------
    def validate_rules(self, v: RulesValidator) -> None:
        v.string("data.noise.lore")
        v.number("data.noise.slope_tolerance_db", lo=0, hi=3)
        colours = v.mapping("data.noise.colours")
        for c in colours:
            v.number(f"data.noise.colours.{c}.slope_db_per_octave", lo=-24, hi=24)
        times = v.mapping("data.times")
        for t in times:
            v.string(f"data.times.{t}")
        gain_lo, gain_hi = -96, 0  # dBFS
        layer_names: set[str] = set()
        for b in v.mapping("data.biomes"):
            p = f"data.biomes.{b}"
            v.string(f"{p}.lore")
            layers = v.mapping(f"{p}.layers")
            for name in layers:
                q = f"{p}.layers.{name}"
                v.reference(f"{q}.noise", colours, "noise colour")
                v.number_range(f"{q}.gain_db", lo=gain_lo, hi=gain_hi)
                v.strings(f"{q}.times", choices=times)
                layer_names.add(name)
            for t in times:
                if not any(t in layers[name]["times"] for name in layers):
                    raise v.fail(f"{p}.layers", f"no layer plays {t!r}; every time of day needs one")
        for w in v.mapping("data.weather"):
            p = f"data.weather.{w}"
            v.string(f"{p}.phrase")
            sound = v.string(f"{p}.sound")
            if sound in layer_names:
                raise v.fail(f"{p}.sound", f"{sound!r} is also a biome layer; weather sounds must differ")
            v.reference(f"{p}.noise", colours, "noise colour")
            v.number_range(f"{p}.gain_db", lo=gain_lo, hi=gain_hi)
            v.string(f"{p}.lore")
        keys = set(v.strings("data.keys"))
        for mode in MODES:
            v.reference(f"data.default_keys.{mode}", keys, "key")
        v.string("data.default_keys.lore")
        moods = v.mapping("data.moods")
        for m in moods:
            v.string(f"data.moods.{m}.mode", choices=MODES)
            v.number_range(f"data.moods.{m}.tempo_bpm", lo=20, hi=300, integer=True)
            v.string(f"data.moods.{m}.lore")
        n_lo, n_hi = v.number_range("data.instruments_per_track", lo=1, hi=12, integer=True)
        teacher_n = min(max(TEACHER_INSTRUMENTS, n_lo), n_hi)
        cultures = v.mapping("data.cultures")
        for c in cultures:
            p = f"data.cultures.{c}"
            for i, meter in enumerate(v.strings(f"{p}.meters")):
                if parse_meter(meter) is None:
                    raise v.fail(f"{p}.meters[{i}]", f"{meter!r} is not a time signature N/D")
            instruments = v.strings(f"{p}.instruments")
            if len(instruments) < teacher_n or len(set(instruments)) != len(instruments):
                raise v.fail(f"{p}.instruments", f"needs at least {teacher_n} distinct instruments")
            v.string(f"{p}.lore")
        slowest = min(moods[m]["tempo_bpm"][0] for m in moods)
        longest_bar = max(bar_seconds(*parse_meter(meter), slowest)
                          for c in cultures for meter in cultures[c]["meters"])
        for q in v.mapping("data.cues"):
            p = f"data.cues.{q}"
            loop = v.at(f"{p}.loop")
            if not isinstance(loop, bool):
                raise v.fail(f"{p}.loop", f"must be true or false, got {loop!r}")
            lo, hi = v.number_range(f"{p}.duration_s", lo=0.1, hi=3600)
            if loop and hi - lo < 2 * longest_bar:
                raise v.fail(f"{p}.duration_s", f"a looping cue's range must span two of the longest "
                                                f"bars ({round(longest_bar, 3)} s)")
            v.string(f"{p}.lore")
        v.number("data.loop.tolerance_s", lo=0.001, hi=1)
        v.string("data.loop.lore")

    # -- tasks ------------------------------------------------------------------------------
    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        data = rules.data
        if rng.random() < 0.4:
            params: dict[str, Any] = {
                "kind": "ambience",
                "biome": rng.choice(sorted(data["biomes"])),
                "time": rng.choice(sorted(data["times"])),
                "ask_gain": rng.random() < 0.7,
            }
            if rng.random() < 0.6:
                params["weather"] = rng.choice(sorted(data["weather"]))
            return params
        params = {
            "kind": "soundtrack",
            "mood": rng.choice(sorted(data["moods"])),
            "culture": rng.choice(sorted(data["cultures"])),
        }
        if rng.random() < 0.7:
            params["cue"] = rng.choice(sorted(data["cues"]))
        if rng.random() < 0.5:
            params["key"] = rng.choice(data["keys"])
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        data = rules.data
        c = ParamsChecker(params)
        kind = params.get("kind")
        if kind == "ambience":
            c.keys({"kind", "biome", "time", "ask_gain"}, {"weather"})
            c.choice("biome", data["biomes"], "biome")
            c.choice("time", data["times"], "time of day")
            c.boolean("ask_gain")
            c.choice("weather", data["weather"], "weather")
        elif kind == "soundtrack":
            c.keys({"kind", "mood", "culture"}, {"cue", "key"})
            c.choice("mood", data["moods"], "mood")
            c.choice("culture", data["cultures"], "culture")
            c.choice("cue", data["cues"], "cue")
            c.choice("key", data["keys"], "key")
        else:
            raise ParamsError("kind", f"unknown kind {kind!r}; allowed: ['ambience', 'soundtrack']")

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        if params["kind"] == "ambience":
            skills = ["biome_layers", "noise_colour"]
            if params.get("ask_gain"):
                skills.append("layer_gain")
            return skills
        skills = ["mood_tempo", "key_mode", "culture_style"]
        if "cue" in params:
            skills.append("loop_duration")
        return skills

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        if params["kind"] == "ambience":
            weather = f" {rules.data['weather'][params['weather']]['phrase']}" if "weather" in params else ""
            asks = "sound, noise colour, slope and gain" if params.get("ask_gain") else "sound, noise colour and slope"
            return (f"Build the ambience of a {params['biome']} {rules.data['times'][params['time']]}"
                    f"{weather}. Give each layer's {asks}.")
        text = f"Score a {params['mood']} track in {_words(params['culture'])} style"
        if "cue" in params:
            text += f" for a {params['cue']} cue"
        if "key" in params:
            text += f", in the key of {params['key']}"
        asks = "tempo, key, mode, meter and instruments"
        if "cue" in params:
            asks = "tempo, key, mode, meter, instruments, duration and whether it loops"
        return f"{text}. Give its {asks}."

    # -- expert -----------------------------------------------------------------------------
    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        if params["kind"] == "ambience":
            return self._plan_ambience(params, rules)
        return self._plan_soundtrack(params, rules)

    def _plan_ambience(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        colours = data["noise"]["colours"]
        layers = expected_layers(params, rules)
        biome_layers = [_words(x["sound"]) for x in layers[:len(layers) - ("weather" in params)]]
        layers_note = (f"A {params['biome']} {data['times'][params['time']]} has "
                       f"{_listing(biome_layers)}.")
        if "weather" in params:
            layers_note += f" {params['weather'].capitalize()} adds {_words(layers[-1]['sound'])}."
        slope = {x["sound"]: colours[x["noise"]]["slope_db_per_octave"] for x in layers}
        gain = {x["sound"]: round((x["gain_db"][0] + x["gain_db"][1]) / 2) for x in layers}
        steps = [
            ("Layers", layers_note),
            ("Colours", _listing([f"{_words(x['sound'])} {x['noise']} ({_signed(slope[x['sound']])})"
                                  for x in layers]).capitalize() + " dB/octave."),
            ("Gains", "Middle gains: " + ", ".join(f"{_words(x['sound'])} {gain[x['sound']]}"
                                                    for x in layers) + " dB."),
        ]
        spec = {"kind": "ambience", "biome": params["biome"],
                "layers": [{"sound": x["sound"], "noise": x["noise"], "slope_db": slope[x["sound"]],
                            "gain_db": gain[x["sound"]]} for x in layers]}
        return Plan(steps, spec)

    def _plan_soundtrack(self, params: dict[str, Any], rules: Rules) -> Plan:
        data = rules.data
        mood = data["moods"][params["mood"]]
        lo, hi = mood["tempo_bpm"]
        tempo = (lo + hi) // 2
        mode = mood["mode"]
        culture = params["culture"]
        meter = data["cultures"][culture]["meters"][0]
        instruments = teacher_instruments(rules, culture)
        if "key" in params:
            key = params["key"]
            key_note = f"{params['mood'].capitalize()} music is {mode}; the task gives {key}: {key} {mode}."
        else:
            key = data["default_keys"][mode]
            key_note = (f"{params['mood'].capitalize()} music is {mode}; no key is given, so {key} "
                        f"{mode}, with no sharps or flats.")
        steps = [
            ("Tempo", f"{params['mood'].capitalize()} music runs {lo} to {hi} BPM; use {tempo}."),
            ("Key", key_note),
            ("Style", f"{_words(culture).capitalize()} style: {meter} with "
                      f"{_listing([_words(i) for i in instruments])}."),
        ]
        spec: dict[str, Any] = {
            "kind": "soundtrack", "mood": params["mood"], "culture": culture, "tempo_bpm": tempo,
            "key": key, "mode": mode, "meter": meter, "instruments": instruments,
        }
        if "cue" in params:
            cue = data["cues"][params["cue"]]
            d_lo, d_hi = cue["duration_s"]
            mid = (d_lo + d_hi) / 2
            if cue["loop"]:
                beats, value = parse_meter(meter)
                bar = bar_seconds(beats, value, tempo)
                bars = max(1, round(mid / bar))
                duration = round(bars * bar, 2)
                steps.append(("Bar", f"A {meter} bar at {tempo} BPM lasts 240*{beats}/({value}*{tempo})"
                                     f" = {round(bar, 3):g} s."))
                steps.append(("Length", f"A {params['cue']} loop lasts {_g(d_lo)} to {_g(d_hi)} s; "
                                        f"{bars} bars make {_g(duration)} s."))
            else:
                duration = round(mid, 2)
                steps.append(("Length", f"A {params['cue']} lasts {_g(d_lo)} to {_g(d_hi)} s and "
                                        f"does not loop; use {_g(duration)} s."))
            spec.update({"cue": params["cue"], "duration_s": duration, "loop": cue["loop"]})
        return Plan(steps, spec)

    # -- verifier ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        if spec["kind"] != params["kind"]:
            first = self.task_skills(params, rules)[0]
            return [Failure(first, f"kind is {spec['kind']!r}, task asks {params['kind']!r}")]
        if params["kind"] == "ambience":
            return self._check_ambience(params, spec, rules)
        return self._check_soundtrack(params, spec, rules)

    def _check_ambience(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        colours = data["noise"]["colours"]
        tol = data["noise"]["slope_tolerance_db"]
        expected = {x["sound"]: x for x in expected_layers(params, rules)}
        layers = spec.get("layers")
        if spec.get("biome") != params["biome"]:
            return [Failure("biome_layers", f"biome is {spec.get('biome')!r}, task asks {params['biome']!r}")]
        if layers is None:
            return [Failure("biome_layers", "the ambience has no layers")]
        failures: list[Failure] = []
        got = sorted(_norm(x["sound"]) for x in layers)
        if got != sorted(expected):
            failures.append(Failure("biome_layers", f"layers are {got}, expected {sorted(expected)}"))
        for x in layers:
            want = expected.get(_norm(x["sound"]))
            noise = _norm(x["noise"])
            if want is not None and noise != want["noise"]:
                failures.append(Failure("noise_colour", f"{x['sound']} is {want['noise']} noise, spec says {x['noise']!r}"))
                break
            if noise not in colours:
                failures.append(Failure("noise_colour", f"{x['noise']!r} is not a noise colour"))
                break
            slope = colours[noise]["slope_db_per_octave"]
            if not abs(x["slope_db"] - slope) <= tol:
                failures.append(Failure("noise_colour", f"{noise} noise falls {slope:+g} dB/octave, spec says {x['slope_db']}"))
                break
        if "layer_gain" in skills:
            for x in layers:
                want = expected.get(_norm(x["sound"]))
                if want is not None and not want["gain_db"][0] <= x["gain_db"] <= want["gain_db"][1]:
                    failures.append(Failure("layer_gain", f"{x['sound']} gain {x['gain_db']} dB is outside {want['gain_db']}"))
                    break
        return failures

    def _check_soundtrack(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        data = rules.data
        skills = self.task_skills(params, rules)
        failures: list[Failure] = []
        mood = data["moods"][params["mood"]]
        tempo = spec.get("tempo_bpm")
        if spec.get("mood") != params["mood"]:
            failures.append(Failure("mood_tempo", f"mood is {spec.get('mood')!r}, task asks {params['mood']!r}"))
        elif tempo is None or not mood["tempo_bpm"][0] <= tempo <= mood["tempo_bpm"][1]:
            failures.append(Failure("mood_tempo", f"tempo {tempo} is outside {params['mood']}'s {mood['tempo_bpm']} BPM"))

        if _norm(spec.get("mode")) != mood["mode"]:
            failures.append(Failure("key_mode", f"{params['mood']} music is {mood['mode']}, spec says {spec.get('mode')!r}"))
        elif "key" in params and spec.get("key") != params["key"]:
            failures.append(Failure("key_mode", f"key is {spec.get('key')!r}, task asks {params['key']!r}"))
        elif spec.get("key") not in data["keys"]:
            failures.append(Failure("key_mode", f"{spec.get('key')!r} is not a key"))

        culture = data["cultures"][params["culture"]]
        instruments = [_norm(i) for i in spec.get("instruments") or []]
        n_lo, n_hi = data["instruments_per_track"]
        if spec.get("culture") != params["culture"]:
            failures.append(Failure("culture_style", f"culture is {spec.get('culture')!r}, task asks {params['culture']!r}"))
        elif spec.get("meter") not in culture["meters"]:
            failures.append(Failure("culture_style", f"{params['culture']} music uses {culture['meters']}, spec says {spec.get('meter')!r}"))
        elif not n_lo <= len(instruments) <= n_hi or len(set(instruments)) != len(instruments):
            failures.append(Failure("culture_style", f"a track needs {n_lo} to {n_hi} distinct instruments, spec has {len(instruments)}"))
        else:
            foreign = [i for i in instruments if i not in culture["instruments"]]
            if foreign:
                failures.append(Failure("culture_style", f"{foreign} are not {params['culture']} instruments"))

        if "loop_duration" in skills:
            failure = _loop_failure(params, spec, rules)
            if failure:
                failures.append(Failure("loop_duration", failure))
        return failures

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        data = rules.data
        out = copy.deepcopy(spec)
        if skill == "biome_layers":
            out["layers"] = out["layers"][:-1]
        elif skill == "noise_colour":
            colours = data["noise"]["colours"]
            layer = out["layers"][0]
            layer["noise"] = next(c for c in sorted(colours) if c != layer["noise"])
            layer["slope_db"] = colours[layer["noise"]]["slope_db_per_octave"]
        elif skill == "layer_gain":
            want = {x["sound"]: x for x in expected_layers(params, rules)}
            layer = out["layers"][0]
            layer["gain_db"] = want[layer["sound"]]["gain_db"][1] + 10
        elif skill == "mood_tempo":
            out["tempo_bpm"] = out["tempo_bpm"] * 2  # out of range, still whole bars
        elif skill == "key_mode":
            out["mode"] = next(m for m in MODES if m != out["mode"])
        elif skill == "culture_style":
            own = set(data["cultures"][params["culture"]]["instruments"])
            out["instruments"].append(next(i for c in sorted(data["cultures"])
                                           for i in data["cultures"][c]["instruments"] if i not in own))
        elif skill == "loop_duration":
            out["loop"] = not out["loop"]
        else:
            raise KeyError(f"sound has no skill {skill!r}")
        return out


def _loop_failure(params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> str | None:
    """Why the cue's length or looping is wrong, or None."""
    data = rules.data
    cue = data["cues"][params["cue"]]
    duration, loop = spec.get("duration_s"), spec.get("loop")
    if spec.get("cue") != params["cue"]:
        return f"cue is {spec.get('cue')!r}, task asks {params['cue']!r}"
    if loop is not cue["loop"]:
        return f"a {params['cue']} cue {'loops' if cue['loop'] else 'does not loop'}, spec says loop={loop}"
    if duration is None or not cue["duration_s"][0] <= duration <= cue["duration_s"][1]:
        return f"duration {duration} s is outside {cue['duration_s']}"
    if not cue["loop"]:
        return None
    meter, tempo = parse_meter(spec.get("meter")), spec.get("tempo_bpm")
    if meter is None or tempo is None or not 0 < tempo <= MAX_TEMPO_BPM:
        return f"no bar length from meter {spec.get('meter')!r} at {tempo} BPM"
    bar = bar_seconds(*meter, tempo)
    bars = round(duration / bar)
    off = abs(duration - bars * bar)
    if bars < 1 or not off <= data["loop"]["tolerance_s"] or not math.isfinite(off):
        return (f"a loop of {duration} s is {round(duration / bar, 3)} bars of {round(bar, 3)} s, "
                f"not a whole number")
    return None
