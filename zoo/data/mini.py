"""``zoo prepare libri2mix-mini``: a small Libri2Mix written in the real on-disk format.

Layout (as produced by the LibriMix scripts, Cosentino et al. 2020)::

    <root>/wav8k/min/{train-100,dev,test}/{mix_clean,mix_both,mix_single,s1,s2,noise}/<ID>.wav
    <root>/wav8k/min/metadata/mixture_<subset>_<mix_clean|mix_both|mix_single>.csv

with mono PCM16 files, mixture IDs ``<spk>-<chapter>-<utt>_<spk>-<chapter>-<utt>`` and absolute
paths in the CSVs. Speakers are disjoint between subsets, like LibriSpeech's splits.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .synth import random_speaker, synth_noise, synth_utterance

__all__ = [
    "MIX_TYPES",
    "Manifest",
    "MiniSpec",
    "NotOursError",
    "claim_root",
    "is_mini_dataset",
    "prepare_libri2mix_mini",
]

MIX_TYPES = ("mix_clean", "mix_both", "mix_single")
MARKER = ".zoo-mini.json"  # written last: a complete set, and its spec
PARTIAL = ".zoo-mini.partial"  # written first: the files here are ours, the set is not complete


class NotOursError(FileExistsError):
    """A folder the mini-set writer did not write: it is never written into or deleted."""


def is_mini_dataset(root: str | Path) -> bool:
    """Whether ``root`` holds a built-in mini set (results on it are labelled ``mini``)."""
    return (Path(root) / MARKER).is_file()


class Manifest:
    """The files a mini-set writer writes, each recorded (in the partial marker, one line per
    file, flushed) before it is written, so that an interrupted or outdated set can later be
    removed file by file: a rebuild never touches a file the writer did not write."""

    def __init__(self, root: Path, spec: dict):
        self.root, self.files = root.resolve(), []
        self._log = open(self.root / PARTIAL, "w")  # noqa: SIM115 - closed by finish()
        self._log.write(json.dumps(spec) + "\n")
        self._log.flush()

    def add(self, path: Path) -> Path:
        """Record ``path`` (under the root) before it is written; returns it."""
        rel = str(Path(path).resolve().relative_to(self.root))
        self.files.append(rel)
        self._log.write(rel + "\n")
        self._log.flush()
        return path

    def finish(self, info: dict) -> None:
        """Write the marker (``info`` and the file list): the set is complete."""
        self._log.close()
        (self.root / MARKER).write_text(json.dumps({**info, "files": self.files}, indent=1))
        (self.root / PARTIAL).unlink()


def _recorded_files(root: Path) -> list[str] | None:
    """The files the writer recorded in the marker or the partial marker (``None``: a set
    written before file lists were kept)."""
    marker, partial = root / MARKER, root / PARTIAL
    if marker.is_file():
        try:
            held = json.loads(marker.read_text())
        except json.JSONDecodeError:
            held = {}
        files = held.get("files") if isinstance(held, dict) else None
        if files is not None or not partial.is_file():
            return files
    return partial.read_text().splitlines()[1:]


def _remove_recorded(root: Path, files: list[str]) -> None:
    """Delete the recorded files, then the folders that this left empty (up to ``root``)."""
    folders = set()
    for rel in files:
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
        folders.update(p for p in path.parents if root in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def claim_root(root: Path, spec: dict, ours: list[str], force: bool) -> Manifest | None:
    """Decide whether a mini set may be (re)written at ``root``.

    Returns ``None`` when a complete set with this ``spec`` is already there (reuse it), else
    the :class:`Manifest` the writer records its files in. A set this tool wrote (marker or
    partial marker) is rebuilt by deleting only the files it recorded, so files a user added
    inside it stay. A folder it did not write is refused when it is not empty, unless
    ``force``; even then, the top-level paths it writes (``ours``) must not exist there.
    """
    marker, partial = root / MARKER, root / PARTIAL
    if marker.is_file() and not force:
        try:
            held = json.loads(marker.read_text())
        except json.JSONDecodeError:
            held = None
        if held == spec or (isinstance(held, dict) and held.get("spec") == spec):
            return None
    if marker.is_file() or partial.is_file():  # ours: delete what we wrote, and only that
        files = _recorded_files(root)
        if files is None:
            raise NotOursError(
                f"{root} holds a mini set written by an earlier zoo, which kept no list of its "
                f"files, so it cannot be rebuilt without risking files of yours: move what you "
                f"added there elsewhere and delete {root}, or choose another --root"
            )
        _remove_recorded(root, files)
        marker.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    elif root.exists() and any(root.iterdir()):
        taken = [rel for rel in ours if (root / rel).exists()]
        if not force or taken:
            why = (
                f"it already has {', '.join(taken)}, which would be replaced"
                if taken
                else "pass --force to add the mini set next to what is there (nothing is deleted)"
            )
            raise NotOursError(
                f"{root} is not empty and holds no mini set written by zoo (no {MARKER}): "
                f"choose an empty or new folder for --root; {why}"
            )
    root.mkdir(parents=True, exist_ok=True)
    return Manifest(root, spec)


@dataclass(frozen=True)
class MiniSpec:
    """What the mini set contains; a different spec on disk means the set is rebuilt."""

    sample_rate: int = 8000
    mode: str = "min"
    seed: int = 0
    n_train: int = 400
    n_dev: int = 24
    n_test: int = 24
    speakers_train: int = 40
    speakers_dev: int = 8
    speakers_test: int = 8
    utterances_per_speaker: int = 12
    min_duration: float = 2.0
    max_duration: float = 4.0
    version: int = 1


SUBSETS = ("train-100", "dev", "test")


def pcm16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to clipped 16-bit integers (what the real datasets store)."""
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _write_subset(
    base: Path,
    subset: str,
    n_mix: int,
    first_speaker: int,
    n_speakers: int,
    spec: MiniSpec,
    rng: np.random.Generator,
    manifest: Manifest,
) -> None:
    sr = spec.sample_rate
    # Utterance pool: speaker -> list of (utterance id, waveform).
    pool = []
    for s in range(n_speakers):
        spk_id = first_speaker + s
        speaker = random_speaker(rng)
        chapter = 100 + int(rng.integers(900))
        utts = []
        for u in range(spec.utterances_per_speaker):
            dur = rng.uniform(spec.min_duration, spec.max_duration)
            utts.append((f"{spk_id}-{chapter}-{u:04d}", synth_utterance(speaker, dur, sr, rng)))
        pool.append(utts)
    dirs = {name: base / subset / name for name in (*MIX_TYPES, "s1", "s2", "noise")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    rows = {t: [] for t in MIX_TYPES}
    for _ in range(n_mix):
        a, b = rng.choice(n_speakers, size=2, replace=False)
        id1, u1 = pool[a][rng.integers(len(pool[a]))]
        id2, u2 = pool[b][rng.integers(len(pool[b]))]
        length = min(len(u1), len(u2)) if spec.mode == "min" else max(len(u1), len(u2))
        srcs = []
        for u in (u1, u2):
            u = u[:length] if len(u) >= length else np.pad(u, (0, length - len(u)))
            srcs.append(u / (np.sqrt(np.mean(u**2)) + 1e-9))  # unit RMS
        # Loudness as in LibriMix: sources within a few dB of each other, noise quieter.
        gains_db = rng.uniform(-28, -22, size=2)
        s1, s2 = (s * 10 ** (g / 20) for s, g in zip(srcs, gains_db, strict=True))
        noise = synth_noise(length / sr, sr, rng)[:length]
        noise = noise / (np.sqrt(np.mean(noise**2)) + 1e-9) * 10 ** (rng.uniform(-36, -30) / 20)
        mixes = {"mix_clean": s1 + s2, "mix_both": s1 + s2 + noise, "mix_single": s1 + noise}
        peak = max(np.abs(m).max() for m in mixes.values())
        scale = min(1.0, 0.9 / peak)  # avoid clipping; same factor for every signal
        mix_id = f"{id1}_{id2}"
        paths = {}
        for name, sig in (("s1", s1), ("s2", s2), ("noise", noise), *mixes.items()):
            p = manifest.add((dirs[name] / f"{mix_id}.wav").resolve())
            sf.write(str(p), pcm16(sig * scale), sr, subtype="PCM_16")
            paths[name] = str(p)
        rows["mix_clean"].append([mix_id, paths["mix_clean"], paths["s1"], paths["s2"], length])
        rows["mix_both"].append(
            [mix_id, paths["mix_both"], paths["s1"], paths["s2"], paths["noise"], length]
        )
        rows["mix_single"].append(
            [mix_id, paths["mix_single"], paths["s1"], paths["noise"], length]
        )
    header = {
        "mix_clean": ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"],
        "mix_both": [
            "mixture_ID",
            "mixture_path",
            "source_1_path",
            "source_2_path",
            "noise_path",
            "length",
        ],
        "mix_single": ["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"],
    }
    meta = base / "metadata"
    meta.mkdir(exist_ok=True)
    for t in MIX_TYPES:
        with open(manifest.add(meta / f"mixture_{subset}_{t}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header[t])
            w.writerows(rows[t])


def prepare_libri2mix_mini(
    root: str | Path, spec: MiniSpec | None = None, force: bool = False
) -> Path:
    """Write the mini Libri2Mix under ``root`` (the ``Libri2Mix`` folder) unless already there.

    Returns ``root``. A marker file written last records the spec: a complete set with the same
    spec is reused, a set this tool wrote with another spec (or an interrupted one) is rebuilt,
    and a folder it did not write is refused (:func:`claim_root`).
    """
    spec = spec or MiniSpec()
    root = Path(root)
    rel = f"wav{spec.sample_rate // 1000}k/{spec.mode}"
    manifest = claim_root(root, asdict(spec), [rel], force)
    if manifest is None:
        return root
    base = root / rel
    rng = np.random.default_rng(spec.seed)
    first = 1
    for subset, n_mix, n_spk in (
        ("train-100", spec.n_train, spec.speakers_train),
        ("dev", spec.n_dev, spec.speakers_dev),
        ("test", spec.n_test, spec.speakers_test),
    ):
        sub_rng = np.random.default_rng(rng.integers(2**32))
        _write_subset(base, subset, n_mix, first, n_spk, spec, sub_rng, manifest)
        first += n_spk
    manifest.finish({"spec": asdict(spec)})
    return root
