"""``zoo prepare musdb18-mini``: a few short music tracks in the MUSDB18-HQ layout.

Layout (as MUSDB18-HQ ships, Rafii et al. 2019)::

    <root>/{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav

44.1 kHz stereo PCM16; ``mixture`` is the sum of the four stems. The stems are rendered here from
note lists, the way General MIDI stems are rendered: a drum kit (kick, snare, hi-hat), a bass line
following a chord progression, chords and arpeggios ("other") and a sung melody with vibrato and
vowel formants ("vocals"), each panned in the stereo field. Deterministic by seed.

The ``stempeg`` package ships a real 7-second MUSDB18 excerpt ("The Easton Ellises - Falcon 69",
academic use only) with its stems. When ffmpeg is available it is decoded at preparation time into
the test subset as one more track - never committed to the repository. Its mixture is the
published one, not the sum of the stems (AAC coding and mastering), as in the real MUSDB18.

``musdb`` decides the train/valid split by track name from a setup file; the mini set writes its
own (``mini_setup.yaml``: musdb's with the mini validation tracks), which the datamodule reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from scipy.signal import butter, sosfilt

from .mini import Manifest, claim_root, pcm16

__all__ = ["MusdbMiniSpec", "prepare_musdb18_mini", "render_track", "SOURCES", "SETUP_FILE"]

SOURCES = ("drums", "bass", "other", "vocals")
SETUP_FILE = "mini_setup.yaml"
RATE = 44100
# Vowel formants (F1, F2, F3) in Hz for the sung syllables.
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [300, 870, 2240]])


@dataclass(frozen=True)
class MusdbMiniSpec:
    """What the mini set contains; a different spec on disk means the set is rebuilt."""

    seed: int = 0
    n_train: int = 8
    n_valid: int = 2  # of the train tracks, named in mini_setup.yaml
    n_test: int = 3
    seconds: float = 10.0
    with_stempeg_example: bool = True
    version: int = 1


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / RATE
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def _harmonic(f0: np.ndarray | float, n: int, amps: list[float], rng) -> np.ndarray:
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / RATE + rng.uniform(0, 2 * np.pi)
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * f0.max() < 0.45 * RATE:
            out += a * np.sin(k * phase)
    return out


def _add(track: np.ndarray, start: int, note: np.ndarray) -> None:
    stop = min(len(track), start + len(note))
    if stop > start:
        track[start:stop] += note[: stop - start]


def _drums(n: int, beat: int, rng) -> np.ndarray:
    out = np.zeros(n)
    hp = butter(4, 6000, "highpass", fs=RATE, output="sos")
    bp = butter(2, [1000, 5000], "bandpass", fs=RATE, output="sos")
    kick_n, snare_n, hat_n = int(0.25 * RATE), int(0.2 * RATE), int(0.06 * RATE)
    t = np.arange(kick_n) / RATE
    kick = np.sin(2 * np.pi * np.cumsum(50 + 90 * np.exp(-t / 0.03)) / RATE) * np.exp(-t / 0.12)
    ts = np.arange(snare_n) / RATE
    for i, start in enumerate(range(0, n, beat)):
        if i % 2 == 0:
            _add(out, start, 0.9 * kick)
        else:
            noise = sosfilt(bp, rng.standard_normal(snare_n)) * np.exp(-ts / 0.06)
            tone = 0.3 * np.sin(2 * np.pi * 185 * ts) * np.exp(-ts / 0.05)
            _add(out, start, 0.5 * noise / (np.abs(noise).max() + 1e-9) + tone)
        for off in (0, beat // 2):
            hat = sosfilt(hp, rng.standard_normal(hat_n)) * _env(hat_n, 0.001, 0.015)
            _add(out, start + off, 0.25 * hat / (np.abs(hat).max() + 1e-9))
    return out


def _progression(rng, bars: int) -> list[list[int]]:
    key = int(rng.integers(0, 12))
    degrees = [[0, 4, 7], [9, 0, 4], [5, 9, 0], [7, 11, 2]]  # I vi IV V
    order = rng.permutation(4)
    return [[key + x for x in degrees[order[b % 4]]] for b in range(bars)]


def _bass(n: int, beat: int, chords, rng) -> np.ndarray:
    out = np.zeros(n)
    lp = butter(2, 900, "lowpass", fs=RATE, output="sos")
    amps = [1 / k for k in range(1, 12)]
    for i, start in enumerate(range(0, n, beat)):
        chord = chords[(i // 4) % len(chords)]
        note = 36 + chord[0] % 12 + (7 if i % 4 == 3 and rng.random() < 0.5 else 0)
        length = int(beat * 0.9)
        tone = _harmonic(_midi_hz(note), length, amps, rng) * _env(length, 0.005, 0.35)
        _add(out, start, sosfilt(lp, tone))
    return out / (np.abs(out).max() + 1e-9)


def _other(n: int, beat: int, chords, rng) -> np.ndarray:
    out = np.zeros(n)
    bar = 4 * beat
    piano = [1.0, 0.5, 0.3, 0.2, 0.12, 0.08]
    for b, start in enumerate(range(0, n, bar)):
        chord = chords[b % len(chords)]
        for x in chord:  # sustained chord
            note = 60 + x % 12
            _add(
                out, start, 0.3 * _harmonic(_midi_hz(note), bar, piano, rng) * _env(bar, 0.01, 0.9)
            )
        for k in range(8):  # eighth-note arpeggio an octave up
            note = 72 + chord[k % 3] % 12
            length = beat // 2
            tone = _harmonic(_midi_hz(note), length, [1.0, 0.2, 0.05], rng)
            _add(out, start + k * length, 0.2 * tone * _env(length, 0.003, 0.12))
    return out / (np.abs(out).max() + 1e-9)


def _vocals(n: int, beat: int, chords, rng) -> np.ndarray:
    out = np.zeros(n)
    f_vib, depth = rng.uniform(4.5, 6.5), rng.uniform(0.15, 0.35)
    amps = [0.9**k for k in range(30)]
    i = 0
    while i * beat < n:
        span = int(rng.choice([1, 1, 2, 2, 3]))
        if rng.random() < 0.2:  # a rest
            i += span
            continue
        chord = chords[(i // 4) % len(chords)]
        note = 64 + int(rng.choice(chord)) % 12 + int(rng.choice([0, 0, 12, -12 + 12]))
        length = span * beat
        t = np.arange(length) / RATE
        f0 = _midi_hz(note + depth * np.sin(2 * np.pi * f_vib * t) * np.minimum(1, t / 0.3))
        tone = _harmonic(f0, length, amps, rng) + 0.02 * rng.standard_normal(length)
        formants = VOWELS[rng.integers(len(VOWELS))]
        shaped = np.zeros(length)
        for f in formants:  # parallel formant resonators
            sos = butter(2, [f * 0.85, f * 1.15], "bandpass", fs=RATE, output="sos")
            shaped += sosfilt(sos, tone)
        _add(out, i * beat, shaped * _env(length, 0.04, 0.8 * length / RATE))
        i += span
    return out / (np.abs(out).max() + 1e-9)


def _pan(x: np.ndarray, pan: float, width_delay: int = 0) -> np.ndarray:
    angle = (pan + 1) * np.pi / 4  # constant power, pan in [-1, 1]
    left, right = np.cos(angle) * x, np.sin(angle) * x
    if width_delay:
        right = np.concatenate([np.zeros(width_delay), right[:-width_delay]])
    return np.stack([left, right], 1)


def render_track(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Render the four stems of one track: ``{source: (T, 2) float64}``; their sum is the mix."""
    n = int(seconds * RATE)
    beat = int(RATE * 60 / rng.uniform(90, 130))
    chords = _progression(rng, 8)
    raw = {
        "drums": _drums(n, beat, rng),
        "bass": _bass(n, beat, chords, rng),
        "other": _other(n, beat, chords, rng),
        "vocals": _vocals(n, beat, chords, rng),
    }
    pans = {"drums": 0.0, "bass": 0.0, "other": rng.uniform(-0.6, 0.6), "vocals": 0.0}
    stems = {}
    for s in SOURCES:
        x = raw[s] / (np.sqrt(np.mean(raw[s] ** 2)) + 1e-9)  # unit RMS, then a random level
        gain = 10 ** (rng.uniform(-24, -16) / 20)
        delay = int(rng.integers(5, 40)) if s == "other" else 0
        stems[s] = _pan(gain * x, pans[s] + rng.uniform(-0.2, 0.2), delay)
    peak = np.abs(sum(stems.values())).max()
    if peak > 0.95:
        stems = {k: v * 0.95 / peak for k, v in stems.items()}
    return stems


def _write_track(folder: Path, stems: dict[str, np.ndarray], manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ints = {k: pcm16(v) for k, v in stems.items()}
    mix = sum(v.astype(np.int32) for v in ints.values())  # the exact sum of the written stems
    for k, v in ints.items():
        sf.write(manifest.add(folder / f"{k}.wav"), v, RATE, subtype="PCM_16")
    mix = np.clip(mix, -32768, 32767).astype(np.int16)
    sf.write(manifest.add(folder / "mixture.wav"), mix, RATE)


def _stempeg_example(root: Path, manifest: Manifest) -> str | None:
    """Decode stempeg's MUSDB18 excerpt into ``test/`` (needs ffmpeg); its name, or None."""
    try:
        import stempeg

        path = stempeg.example_stem_path()
        audio, rate = stempeg.read_stems(path, dtype=np.float32)  # (5, T, 2)
    except Exception:  # noqa: BLE001  (no ffmpeg / no stempeg: the set works without it)
        return None
    name = Path(path).name.removesuffix(".stem.mp4")
    audio = audio[:, :-4096].astype(np.float64)  # the decoded AAC tail holds encoder artefacts
    stems = dict(zip(SOURCES, audio[1:], strict=True))
    if int(rate) != RATE:
        return None
    folder = root / "test" / name
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in stems.items():
        sf.write(manifest.add(folder / f"{k}.wav"), pcm16(v), RATE, subtype="PCM_16")
    sf.write(manifest.add(folder / "mixture.wav"), pcm16(audio[0]), RATE, subtype="PCM_16")
    return name


def prepare_musdb18_mini(
    root: str | Path, spec: MusdbMiniSpec | None = None, force: bool = False
) -> Path:
    """Write the mini MUSDB18-HQ under ``root`` unless a complete one with the same spec is
    there. Returns ``root``."""
    spec = spec or MusdbMiniSpec()
    root = Path(root)
    manifest = claim_root(root, asdict(spec), ["train", "test", SETUP_FILE], force)
    if manifest is None:
        return root
    rng = np.random.default_rng(spec.seed)
    names = {"train": [], "test": []}
    for subset, count in (("train", spec.n_train), ("test", spec.n_test)):
        for i in range(count):
            name = f"Zoo Mini - {subset.title()} Song {i + 1:02d}"
            _write_track(root / subset / name, render_track(spec.seconds, rng), manifest)
            names[subset].append(name)
    valid = names["train"][-spec.n_valid :] if spec.n_valid else []
    example = _stempeg_example(root, manifest) if spec.with_stempeg_example else None
    setup = yaml.safe_load(_musdb_setup_path().read_text())
    setup["validation_tracks"] = valid
    manifest.add(root / SETUP_FILE).write_text(yaml.safe_dump(setup, sort_keys=False))
    info = {"spec": asdict(spec), "tracks": names, "valid": valid, "stempeg_example": example}
    manifest.finish(info)
    return root


def _musdb_setup_path() -> Path:
    """musdb's own ``configs/mus.yaml`` (found without importing musdb, which needs ffmpeg)."""
    import importlib.util

    spec = importlib.util.find_spec("musdb")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the musdb package is not installed (pip install musdb)")
    return Path(list(spec.submodule_search_locations)[0]) / "configs" / "mus.yaml"
