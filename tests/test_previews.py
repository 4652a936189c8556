"""Previews: every model type's spec renders deterministically, marks failures, survives hostile input."""

from __future__ import annotations

import io
import logging
import math
import random
import wave
from functools import cache

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import signal

from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import MODEL_TYPES, get_domain
from srl_assets.domains.base import Failure
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.previews import Rendering, render, renderable_types, skill_keys
from srl_assets.previews import sound as sound_preview
from srl_assets.previews.facial import mouth_box_px
from srl_assets.rules_integration import RulesIntegration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_TASKS = 5


@cache
def _setup(model_type: str):
    domain = get_domain(model_type)
    rules = RulesIntegration().load(model_type)
    tasks = DynamicExampleGenerator(domain, rules).generate(N_TASKS, "eval", seed=7)
    return domain, rules, tasks


@cache
def _teacher(model_type: str, i: int) -> tuple[dict, Rendering]:
    domain, rules, tasks = _setup(model_type)
    spec = domain.plan(tasks[i].params, rules).spec
    return spec, render(model_type, spec)


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return imread(io.BytesIO(png))


def test_every_model_type_has_a_preview_that_maps_all_its_skills():
    assert set(renderable_types()) == set(MODEL_TYPES)
    for model_type in MODEL_TYPES:
        assert set(skill_keys(model_type)) == set(get_domain(model_type).skills), model_type


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_teacher_specs_render_the_same_bytes_twice(model_type):
    for i in range(N_TASKS):
        spec, first = _teacher(model_type, i)
        again = render(model_type, spec)
        assert first.readable and first.marked == ()
        assert first.png == again.png, f"{model_type} task {i}: PNG differs between two renders"
        _image(first.png)
        if model_type == "sound":
            assert first.wav is not None and first.wav == again.wav
            with wave.open(io.BytesIO(first.wav)) as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, sound_preview.RATE)
        else:
            assert first.wav is None


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_mutated_spec_renders_with_the_failed_skill_marked(model_type):
    domain, rules, tasks = _setup(model_type)
    verifier = Verifier(domain, rules)
    for i, task in enumerate(tasks):
        skill = task.skills[i % len(task.skills)]
        spec, teacher = _teacher(model_type, i)
        broken = domain.mutate(skill, task.params, spec, rules, random.Random(i))
        failures = verifier.verify_spec(task, broken).failures
        assert skill in {f.skill for f in failures}
        got = render(model_type, broken, failures)
        assert got.readable
        assert skill in got.marked
        assert set(got.marked) == {f.skill for f in failures}
        assert got.png != teacher.png


def test_failures_may_come_as_json_dicts_and_junk_is_ignored():
    spec, _ = _teacher("plant", 0)
    got = render("plant", spec, [{"skill": "soil_ph", "reason": "too acid"}, "junk", 5, {"no": "skill"}])
    assert got.marked == ("soil_ph",)


def _hostile_leaves(value, leaf):
    """The spec with every leaf value (numbers, strings, bools) replaced by ``leaf(value)``."""
    if isinstance(value, dict):
        return {k: _hostile_leaves(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_hostile_leaves(v, leaf) for v in value]
    return leaf(value)


def _deep(depth: int):
    node: object = 1
    for _ in range(depth):
        node = {"x": [node]}
    return node


HOSTILE_LEAVES = {
    "nan": lambda v: math.nan,
    "inf": lambda v: -math.inf,
    "huge_int": lambda v: 10**400,
    "long_text": lambda v: "x" * 5000,
    "none": lambda v: None,
    "huge_list": lambda v: [v] * 50_000,
    "deep": lambda v: _deep(200),
    "flipped_types": lambda v: "1" if isinstance(v, (int, float)) else 7,
}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hostile_specs_render_without_raising(model_type, caplog):
    spec, _ = _teacher(model_type, 0)
    caplog.set_level(logging.WARNING, logger="srl_assets.previews")
    for name, leaf in HOSTILE_LEAVES.items():
        hostile = _hostile_leaves(spec, leaf)
        got = render(model_type, hostile, [Failure("schema", name)])
        _image(got.png)
    for junk in (None, [], [spec] * 1000, "not json {", '{"a": [1, 2', 42, 3.5, True, {}, {1: 2, "a": 3},
                 {"emotion": {"x": {"y": {}}}}, "[1, 2, 3]"):
        got = render(model_type, junk)
        _image(got.png)
        if not isinstance(junk, dict):
            assert not got.readable and got.marked == ()
    assert not [r for r in caplog.records if "renderer" in r.getMessage() or r.exc_info], \
        "a hostile spec reached the renderer-error safety net instead of being read defensively"


def test_a_renderer_bug_still_gives_the_unreadable_image(monkeypatch, caplog):
    import srl_assets.previews as previews

    def broken(spec, marks):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(previews, "_function", lambda target: broken)
    got = render("tree", {"height_m": 3})
    assert not got.readable and got.png.startswith(PNG_MAGIC)
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_unknown_model_type_gets_the_generic_card_with_failures_marked():
    got = render("dragon", {"wings": 4, "fire": 0.7, "name": "Smaug"}, [Failure("wings", "too many")])
    assert got.readable and got.marked == ("wings",) and got.wav is None
    _image(got.png)
    assert render("dragon", {"wings": 4}).png != got.png


def test_a_spec_given_as_json_text_or_in_a_trajectory_renders_like_the_dict():
    import json

    from srl_assets.trajectory import render_trajectory

    spec, teacher = _teacher("tree", 0)
    assert render("tree", json.dumps(spec)).png == teacher.png
    assert render("tree", render_trajectory([("Size", "tall")], spec)).png == teacher.png


# ----------------------------------------------------------------------------------------------
# Facial: the mouth follows the blendshapes


def _mouth_lip_rows(png: bytes) -> tuple[float, float]:
    """Mean image row of lip-coloured pixels at the mouth corners and at its centre."""
    img = _image(png)[..., :3]
    left, top, right, bottom = mouth_box_px()
    box = img[top:bottom, left:right]
    r, g, b = box[..., 0], box[..., 1], box[..., 2]
    lips = (r > 0.35) & (r - g > 0.25) & (r - b > 0.2)  # the red lips, not the beige skin
    rows, cols = np.nonzero(lips)
    assert len(rows) > 50, "no lips found in the mouth box"
    lo, hi = cols.min(), cols.max()
    span = hi - lo
    corner = (cols < lo + span * 0.2) | (cols > hi - span * 0.2)
    centre = np.abs(cols - (lo + hi) / 2) < span * 0.15
    return float(rows[corner].mean()), float(rows[centre].mean())


def test_happiness_and_sadness_draw_measurably_different_mouths():
    domain, rules, _ = _setup("facial")
    got = {}
    for emotion in ("happiness", "sadness"):
        spec = domain.plan({"emotion": emotion, "intensity": "D", "ask_body": True}, rules).spec
        got[emotion] = render("facial", spec).png
    happy_corner, happy_centre = _mouth_lip_rows(got["happiness"])
    sad_corner, sad_centre = _mouth_lip_rows(got["sadness"])
    # Image rows grow downwards: a smile's corners sit above its centre, a frown's below.
    assert happy_corner < happy_centre - 3
    assert sad_corner > sad_centre + 3
    left, top, right, bottom = mouth_box_px()
    a = _image(got["happiness"])[top:bottom, left:right, :3]
    b = _image(got["sadness"])[top:bottom, left:right, :3]
    assert float(np.abs(a - b).mean()) > 0.02


# ----------------------------------------------------------------------------------------------
# Sound: the WAV has the slope of its noise colour


def _measured_slope(wav: bytes) -> float:
    """dB per octave of a line fitted to the log-power spectrum against log2 frequency."""
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    freqs, power = signal.welch(audio, fs=rate, nperseg=4096)
    band = (freqs >= 100) & (freqs <= 8000)
    slope, _ = np.polyfit(np.log2(freqs[band]), 10 * np.log10(power[band]), 1)
    return float(slope)


@pytest.mark.parametrize("colour,expected", [("white", 0), ("pink", -3), ("brown", -6), ("blue", 3), ("violet", 6)])
def test_ambience_noise_has_its_colours_spectral_slope(colour, expected):
    spec = {"kind": "ambience", "biome": "test",
            "layers": [{"sound": "hiss", "noise": colour, "slope_db": expected, "gain_db": -6}]}
    got = render("sound", spec)
    assert got.readable and got.wav is not None
    assert abs(_measured_slope(got.wav) - expected) < 1.0


def test_the_slope_wins_over_a_disagreeing_colour_name():
    spec = {"kind": "ambience", "biome": "test",
            "layers": [{"sound": "hiss", "noise": "pink", "slope_db": -6, "gain_db": -6}]}
    got = render("sound", spec)
    assert abs(_measured_slope(got.wav) + 6) < 1.0
    named = render("sound", {**spec, "layers": [{**spec["layers"][0], "slope_db": -3}]})
    assert named.png != got.png  # the card says the slope disagrees with the colour


def test_soundtrack_wav_holds_the_tonic_triad():
    spec = {"kind": "soundtrack", "mood": "sad", "tempo_bpm": 70, "key": "A", "mode": "minor", "meter": "4/4",
            "instruments": ["piano"]}
    got = render("sound", spec)
    with wave.open(io.BytesIO(got.wav)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    freqs, power = signal.welch(audio, fs=sound_preview.RATE, nperseg=8192)
    peaks = {round(f) for f in freqs[signal.find_peaks(power, height=power.max() * 0.1)[0]]}
    # A minor: A4 440, C5 523, E5 659 Hz (within one FFT bin of 2.7 Hz)
    for want in (440, 523, 659):
        assert any(abs(p - want) <= 4 for p in peaks), (want, sorted(peaks)[:12])
