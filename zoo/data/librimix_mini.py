"""Small trees in the real formats of LibriSpeech, WHAM! noise and LibriMix's metadata, for the
tests and benchmarks of the on-the-fly Libri2Mix (:mod:`zoo.data.librimix`).

* LibriSpeech: ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz
  mono FLAC, PCM16) with the subsets ``train-clean-100``, ``dev-clean``, ``test-clean``.
* WHAM! noise: ``<root>/{tr,cv,tt}/<name>.wav`` (16 kHz stereo), some shorter than the speech.
* LibriMix metadata: ``<root>/libri2mix_<subset>.csv`` with ``mixture_ID, source_1_path,
  source_1_gain, source_2_path, source_2_gain, noise_path, noise_gain`` (paths relative to the
  LibriSpeech and WHAM! roots), speakers of a mixture distinct, as LibriMix's.

Speech-like audio from :mod:`zoo.data.synth` (distinct synthetic speakers), not real speech.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from .librimix import RATE
from .mini import pcm16
from .synth import random_speaker, synth_noise, synth_utterance

__all__ = ["write_librimix_tree"]

WHAM_DIRS = {"train-clean-100": "tr", "dev-clean": "cv", "test-clean": "tt"}


def write_librimix_tree(
    root: str | Path,
    n_speakers: int = 4,
    utterances: int = 3,
    n_mixtures: int = 4,
    seconds: tuple[float, float] = (1.5, 3.0),
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``LibriSpeech/``, ``wham_noise/`` and ``metadata/`` under ``root``; returns their
    paths. Every subset has ``n_speakers`` speakers (two chapters each) of ``utterances``
    utterances and ``n_mixtures`` metadata rows."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    speech, wham, meta = root / "LibriSpeech", root / "wham_noise", root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    first = 100
    for subset, noise_dir in WHAM_DIRS.items():
        utts = []  # (relative path, speaker)
        for s in range(n_speakers):
            speaker, spk_id = random_speaker(rng), first + s
            for u in range(utterances):
                chapter = 1000 + spk_id * 10 + u % 2
                rel = f"{subset}/{spk_id}/{chapter}/{spk_id}-{chapter}-{u:04d}.flac"
                (speech / rel).parent.mkdir(parents=True, exist_ok=True)
                x = synth_utterance(speaker, rng.uniform(*seconds), RATE, rng)
                x = 0.1 * x / (np.abs(x).max() + 1e-9)
                sf.write(speech / rel, pcm16(x), RATE, format="FLAC", subtype="PCM_16")
                utts.append((rel, spk_id))
        first += n_speakers
        (wham / noise_dir).mkdir(parents=True, exist_ok=True)
        rows = []
        for m in range(n_mixtures):
            a, b = rng.choice(len(utts), size=2, replace=False)
            while utts[a][1] == utts[b][1]:
                b = rng.integers(len(utts))
            noise = f"{noise_dir}/noise_{m:03d}.wav"
            n_sec = rng.uniform(0.6, 1.2) if m % 2 else seconds[1] + 0.5  # some too short
            stereo = np.stack([synth_noise(n_sec, RATE, rng) for _ in range(2)], 1)
            sf.write(wham / noise, pcm16(0.05 * stereo), RATE, subtype="PCM_16")
            ids = [Path(utts[i][0]).stem for i in (a, b)]
            gains = rng.uniform(0.5, 2.0, size=3)
            rows.append([f"{ids[0]}_{ids[1]}", utts[a][0], gains[0], utts[b][0], gains[1],
                         noise, gains[2]])  # fmt: skip
        with open(meta / f"libri2mix_{subset}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["mixture_ID", "source_1_path", "source_1_gain", "source_2_path",
                        "source_2_gain", "noise_path", "noise_gain"])  # fmt: skip
            w.writerows(rows)
    return {"librispeech": speech, "wham": wham, "metadata": meta}
