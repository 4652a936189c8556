"""Sound preview: a short WAV synthesized from the spec, and its spectrogram with the values.

* ambience: each layer is Gaussian noise shaped in the frequency domain to its ``slope_db``
  (dB/octave: power ~ f^(slope / 10·log10 2)), scaled to its ``gain_db`` (RMS re full scale),
  then summed. Where ``slope_db`` disagrees with the named colour's slope, the slope wins (it is
  what an engine's noise generator takes) and the card says so.
* soundtrack: a click track at ``tempo_bpm`` (the first beat of each bar of ``meter`` accented)
  over the tonic triad of ``key`` and ``mode``.

Noise is seeded from the spec's canonical JSON, so the same spec gives the same bytes.
"""

from __future__ import annotations

import io
import math
import re
import wave
from typing import Any

import numpy as np
from scipy import signal

from srl_assets.previews.common import (shown, MUTED, Marks, Reader, Row, clip, draw_rows, finite, footer,
                                        new_figure, spec_seed, text_axes, title, to_png)

SKILL_KEYS: dict[str, dict[str, tuple[str, ...]]] = {"sound": {
    "biome_layers": ("biome", "layers"),
    "noise_colour": ("layers.noise", "layers.slope_db"),
    "layer_gain": ("layers.gain_db",),
    "mood_tempo": ("mood", "tempo_bpm"),
    "key_mode": ("key", "mode"),
    "culture_style": ("culture", "meter", "instruments"),
    "loop_duration": ("cue", "duration_s", "loop"),
}}

RATE = 22_050
AMBIENCE_S, TRACK_S = 2.0, 3.0
WIDTH, HEIGHT = 560, 420
MAX_LAYERS = 8
# A layer's gain_db is its level in the mix; the mix sits this far below full scale so that a few
# layers at -10 dB add up without clipping (noise peaks run ~4x its RMS).
HEADROOM_DB = 12.0
COLOUR_SLOPES = {"white": 0.0, "pink": -3.0, "brown": -6.0, "blue": 3.0, "violet": 6.0}
DB_PER_OCTAVE_PER_POWER_EXPONENT = 10 * math.log10(2)  # 3.0103: power ~ f^a falls a*3.01 dB/octave
NOTES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
KEY_RE = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)")
METER_RE = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{1,2})\s*$")


def render_sound(spec: dict[str, Any], marks: Marks) -> tuple[bytes, bytes]:
    from srl_assets.previews import Unreadable

    r = Reader(spec)
    kind = r.text("kind").lower()
    if kind != "soundtrack" and (kind == "ambience" or "layers" in spec):
        audio, rows, heading = _ambience(r, np.random.default_rng(spec_seed(spec)), marks)
    elif kind == "soundtrack" or {"tempo_bpm", "key", "mode"} & set(spec):
        audio, rows, heading = _soundtrack(r)
    else:
        raise Unreadable(f"kind {clip(spec.get('kind'), 20)} is neither ambience nor soundtrack, "
                         f"and there are no layers or tempo")
    wav = to_wav(audio)
    fig = new_figure(WIDTH, HEIGHT)
    title(fig, heading, f"{kind or 'sound'} · {len(audio) / RATE:g} s preview (WAV)", marks, ("kind",))
    ax = fig.add_axes((0.08, 0.52, 0.88, 0.32))
    _spectrogram(ax, audio)
    panel = text_axes(fig, (0.02, 0.15, 0.96, 0.33))
    draw_rows(panel, rows, marks, step=min(0.16, 0.98 / max(len(rows), 1)), label_w=0.25, fontsize=8.5)
    footer(fig, marks, r.notes, height=0.13)
    return to_png(fig), wav


# ----------------------------------------------------------------------------------------------
# Ambience


def shaped_noise(n: int, slope_db: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls ``slope_db`` per octave, at unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    exponent = slope_db / DB_PER_OCTAVE_PER_POWER_EXPONENT  # power exponent; amplitude takes half
    gain = np.zeros_like(freqs)
    gain[1:] = freqs[1:] ** (exponent / 2)
    out = np.fft.irfft(spectrum * gain, n)
    rms = float(np.sqrt(np.mean(out**2)))
    return out / rms if rms > 0 else out


def _ambience(r: Reader, rng: np.random.Generator, marks: Marks) -> tuple[np.ndarray, list[Row], str]:
    n = int(AMBIENCE_S * RATE)
    # The verifier names the layer it rejects ("crickets is pink noise, ..."): mark that row only.
    layer_failures = [f.reason for f in marks.failures if f.skill in ("biome_layers", "noise_colour", "layer_gain")]
    sounds = [x.get("sound") for x in r.items("layers", limit=MAX_LAYERS) if isinstance(x, dict)]
    blamed = [s for s in sounds if isinstance(s, str) and s and any(s in reason for reason in layer_failures)]
    mix = np.zeros(n)
    rows: list[Row] = []
    layers = r.items("layers", limit=MAX_LAYERS)
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            r.notes.append(f"layers[{i}] is not an object")
            continue
        name = r.text("sound", f"layer {i + 1}", node=layer).replace("_", " ")
        colour = r.text("noise", "", node=layer).lower()
        named = COLOUR_SLOPES.get(colour)
        slope = finite(layer.get("slope_db"))
        note = ""
        if slope is None:
            slope = named if named is not None else 0.0
            note = f" (no slope: {'the colour' if named is not None else 'white'})"
            r.notes.append(f"{name}: slope_db is missing or not a number; drawn {slope:+g} dB/oct")
        elif named is not None and abs(slope - named) > 0.5:
            note = f" (≠ {colour} {named:+g}: slope used)"
            r.notes.append(f"{name}: slope {slope:+g} dB/oct disagrees with {colour} ({named:+g}); the slope wins")
        slope = min(max(slope, -12.0), 12.0)
        gain = finite(layer.get("gain_db"))
        if gain is None:
            r.notes.append(f"{name}: gain_db is missing or not a number; drawn at -20 dB")
            gain = -20.0
        gain = min(max(gain, -90.0), 0.0)
        mix += shaped_noise(n, slope, rng) * 10 ** ((gain - HEADROOM_DB) / 20)
        rows.append(Row(clip(name, 20), ("layers", "layers.noise", "layers.slope_db", "layers.gain_db"),
                        f"{colour or '?'} {slope:+g} dB/oct{note}, {gain:g} dB",
                        bar=(gain, -60.0, 0.0), bad=(layer.get("sound") in blamed) if blamed else None))
    if not rows:
        r.notes.append("no readable layer: silence")
        rows.append(Row("layers", ("layers",), "–"))
    biome = r.text("biome", "")
    rows.insert(0, Row("biome", ("biome",), biome or "–"))
    return _limit(mix, r), rows, (biome.replace("_", " ").capitalize() or "Ambience") + " ambience"


def _limit(audio: np.ndarray, r: Reader) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 0.99:  # keep the layers' balance, lose only the overall level
        r.notes.append(f"the mix peaks at {20 * math.log10(peak):+.1f} dBFS; scaled down to avoid clipping")
        return audio * (0.99 / peak)
    return audio


# ----------------------------------------------------------------------------------------------
# Soundtrack


def tonic_hz(key: str) -> float | None:
    """The key's tonic in octave 3-4 (A4 = 440 Hz); None if it is not a key name."""
    m = KEY_RE.match(key)
    if not m:
        return None
    semis = NOTES[m.group(1).upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(m.group(2), 0)
    midi = 60 + semis % 12  # C4 .. B4
    return 440.0 * 2 ** ((midi - 69) / 12)


def _soundtrack(r: Reader) -> tuple[np.ndarray, list[Row], str]:
    tempo = r.num("tempo_bpm", 100, 20, 300)
    key, mode = r.text("key", ""), r.text("mode", "").lower()
    meter = r.text("meter", "")
    m = METER_RE.match(meter)
    beats = int(m.group(1)) if m and 1 <= int(m.group(1)) <= 16 else 4
    unit = int(m.group(2)) if m and int(m.group(2)) in (1, 2, 4, 8, 16, 32) else 4
    if not m:
        r.notes.append(f"meter {meter or '(none)'!r} is not a time signature; clicks in 4")
    tonic = tonic_hz(key) if key else None
    if tonic is None:
        r.notes.append(f"key {key or '(none)'!r} is not a key; the triad is on C")
        tonic = tonic_hz("C")
    if mode not in ("major", "minor"):
        r.notes.append(f"mode {mode or '(none)'!r} is neither major nor minor; the triad is major")
    third = 3 if mode == "minor" else 4
    n = int(TRACK_S * RATE)
    t = np.arange(n) / RATE
    # The triad, softly enveloped: root, third and fifth.
    chord = sum(np.sin(2 * math.pi * tonic * 2 ** (s / 12) * t) for s in (0, third, 7)) / 3
    audio = 0.35 * chord * np.minimum(1, t / 0.05) * np.minimum(1, (TRACK_S - t) / 0.2)
    # One click per note of the meter's unit (eighths in 6/8), the bar's first one accented;
    # tempo counts quarter notes, as the domain's bar arithmetic does.
    beat_s = 240.0 / (unit * tempo)
    click_t = np.arange(int(0.03 * RATE)) / RATE
    for k in range(int(TRACK_S / beat_s) + 1):
        start = int(k * beat_s * RATE)
        if start >= n:
            break
        accent = k % beats == 0
        click = (0.6 if accent else 0.35) * np.sin(2 * math.pi * (1760 if accent else 1320) * click_t) \
            * np.exp(-click_t * 200)
        end = min(n, start + len(click))
        audio[start:end] += click[: end - start]
    audio = _limit(audio, r)
    instruments = r.items("instruments")
    duration = finite(r.spec.get("duration_s"))
    loop = r.spec.get("loop")
    rows = [
        Row("mood", ("mood",), r.text("mood", "–")),
        Row("tempo", ("tempo_bpm",), f"{shown(r.spec.get('tempo_bpm'), limit=12)} BPM", bar=(tempo, 40.0, 200.0)),
        Row("key / mode", ("key", "mode"), f"{key or '–'} {mode or '–'}"),
        Row("culture / meter", ("culture", "meter"), f"{r.text('culture', '–')}, {meter or '–'}"),
        Row("instruments", ("instruments",), ", ".join(clip(i, 18) for i in instruments) or "–"),
    ]
    if {"cue", "duration_s", "loop"} & set(r.spec):
        rows.append(Row("cue", ("cue", "duration_s", "loop"),
                        f"{r.text('cue', '–')}, {'–' if duration is None else f'{duration:g} s'}, "
                        f"{'loops' if loop is True else 'no loop' if loop is False else 'loop ?'}"))
    heading = f"{r.text('mood', 'Soundtrack').capitalize()} · {key or '?'} {mode or ''}".strip()
    return audio, rows, heading


# ----------------------------------------------------------------------------------------------
# Output


def to_wav(audio: np.ndarray) -> bytes:
    """16-bit PCM mono WAV bytes."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _spectrogram(ax, audio: np.ndarray) -> None:
    freqs, times, power = signal.spectrogram(audio, fs=RATE, nperseg=512, noverlap=256)
    db = 10 * np.log10(power + 1e-12)
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-110, vmax=-20,
              extent=(times[0], times[-1], freqs[0] / 1000, freqs[-1] / 1000), interpolation="nearest")
    ax.set_ylabel("kHz", fontsize=8)
    ax.set_xlabel("s", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=7)
    ax.set_title("spectrogram", fontsize=8, color=MUTED, pad=2)
