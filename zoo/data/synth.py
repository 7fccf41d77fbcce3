"""Offline speech-like audio: a small source-filter synthesiser with distinct "speakers".

Each speaker has a fundamental frequency range, a vocal-tract length (scaling its formants), a
speaking rate, a spectral tilt and a breathiness. An utterance is a sequence of syllables
(optional fricative or plosive onset + voiced vowel with formants) grouped into words separated by
short pauses, on a declining F0 contour with per-syllable accents. It is not intelligible speech,
but it has what separation models key on: harmonic structure with a speaker-specific pitch,
formant envelopes, onsets, and silences. Deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

__all__ = ["Speaker", "random_speaker", "synth_utterance", "synth_noise"]

# (F1, F2, F3) in Hz for an adult male vocal tract (Peterson & Barney 1952, rounded).
VOWELS = np.array(
    [
        [730, 1090, 2440],  # a
        [530, 1840, 2480],  # e
        [270, 2290, 3010],  # i
        [570, 840, 2410],  # o
        [300, 870, 2240],  # u
        [660, 1720, 2410],  # ae
        [490, 1350, 1690],  # er
    ],
    dtype=np.float64,
)
BANDWIDTHS = np.array([80.0, 100.0, 140.0])


@dataclass(frozen=True)
class Speaker:
    """Voice parameters of one synthetic speaker."""

    f0: float  # median fundamental frequency (Hz)
    tract: float  # formant scale (1 = adult male; ~1.17 female; ~1.3 child)
    rate: float  # syllables per second
    tilt: float  # glottal low-pass pole (0..1, larger = darker voice)
    breath: float  # aspiration noise level relative to voicing


def random_speaker(rng: np.random.Generator) -> Speaker:
    """Draw a speaker; about half male-like and half female-like voices."""
    female = rng.random() < 0.5
    f0 = rng.uniform(165, 255) if female else rng.uniform(85, 150)
    tract = rng.uniform(1.1, 1.25) if female else rng.uniform(0.88, 1.05)
    return Speaker(
        f0=float(f0),
        tract=float(tract),
        rate=float(rng.uniform(3.5, 6.0)),
        tilt=float(rng.uniform(0.55, 0.85)),
        breath=float(rng.uniform(0.01, 0.08)),
    )


def _resonator(freq: float, bw: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-order all-pole resonator with unit gain at DC."""
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([a.sum()]), a


def _formant_filter(x: np.ndarray, formants: np.ndarray, sr: int, zi: list) -> np.ndarray:
    for k, (f, bw) in enumerate(zip(formants, BANDWIDTHS, strict=True)):
        f = min(f, 0.45 * sr)
        b, a = _resonator(f, bw, sr)
        x, zi[k] = lfilter(b, a, x, zi=zi[k])
    return x


def synth_utterance(
    speaker: Speaker, duration: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Synthesise ``duration`` seconds of speech-like audio at ``sr`` Hz, peak-normalised to 0.5."""
    n = int(round(duration * sr))
    out = np.zeros(n)
    zi = [np.zeros(2) for _ in range(3)]
    pos = int(rng.uniform(0.0, 0.25) * sr)  # leading silence
    phase = 0.0
    while pos < n - int(0.05 * sr):
        n_syll = int(rng.integers(1, 4))  # a word
        for _ in range(n_syll):
            dur = rng.uniform(0.7, 1.3) / speaker.rate
            seg = int(dur * sr)
            if pos + seg > n:
                seg = n - pos
            if seg <= int(0.02 * sr):
                break
            # Onset: fricative (filtered noise) or plosive (short burst), 60 % of syllables.
            onset = np.zeros(seg)
            kind = rng.random()
            if kind < 0.6:
                c_len = min(seg // 3, int(rng.uniform(0.03, 0.09) * sr))
                noise = rng.standard_normal(c_len)
                noise = lfilter([1, -rng.uniform(0.5, 0.95)], [1], noise)  # high-pass tilt
                env = np.hanning(2 * c_len)[c_len:] if kind < 0.25 else np.hanning(c_len)
                onset[:c_len] = 0.25 * noise * env
                v_start = c_len // 2
            else:
                v_start = 0
            # Voiced nucleus: glottal pulse train on the F0 contour.
            t = np.arange(seg - v_start) / sr
            progress = (pos + v_start) / n
            f0 = speaker.f0 * (1.12 - 0.2 * progress) * rng.uniform(0.9, 1.15)
            f0_track = f0 * (
                1 + 0.06 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6))
            )
            inc = f0_track / sr
            ph = phase + np.cumsum(inc)
            pulses = np.diff(np.floor(ph), prepend=np.floor(phase)) > 0
            phase = float(ph[-1] % 1.0) if len(ph) else phase
            glottal = pulses.astype(np.float64)
            glottal = lfilter([1.0], [1.0, -speaker.tilt], glottal)
            glottal = lfilter([1.0], [1.0, -speaker.tilt], glottal)
            glottal += speaker.breath * rng.standard_normal(len(glottal))
            env = np.hanning(len(glottal)) ** 0.5
            voiced = np.zeros(seg)
            voiced[v_start:] = glottal * env
            formants = VOWELS[rng.integers(len(VOWELS))] * speaker.tract
            syl = _formant_filter(voiced, formants, sr, zi) + onset
            out[pos : pos + seg] += syl
            pos += seg
        pos += int(rng.uniform(0.05, 0.35) * sr)  # pause between words
    out -= out.mean()
    peak = np.abs(out).max()
    return out * (0.5 / peak) if peak > 0 else out


def synth_noise(duration: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Ambient noise: pink-ish noise with slow amplitude modulation, peak-normalised to 0.5."""
    n = int(round(duration * sr))
    white = rng.standard_normal(n)
    pink = lfilter(
        [0.049922, -0.095993, 0.050612, -0.004408], [1, -2.494956, 2.017265, -0.522189], white
    )
    mod = 1 + 0.5 * np.sin(
        2 * np.pi * rng.uniform(0.1, 0.5) * np.arange(n) / sr + rng.uniform(0, 6)
    )
    out = pink * mod
    out -= out.mean()
    return out * (0.5 / np.abs(out).max())
