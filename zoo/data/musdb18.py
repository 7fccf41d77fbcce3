"""MUSDB18 / MUSDB18-HQ through the ``musdb`` package (Rafii et al. 2017/2019).

MUSDB18 ships ``.stem.mp4`` files (5 streams: mixture, drums, bass, other, vocals); MUSDB18-HQ
ships one folder of wav files per track. ``musdb`` reads both and defines the train/valid split
(14 of the 100 training tracks validate). Training follows Open-Unmix's recipe: random chunks,
each source drawn from a different random track, random gain in [0.25, 1.25] and random channel
swap per source, the mixture being the sum of the augmented sources. Validation and test use whole
tracks (batch size 1) with their true mixture.

``musdb`` (through ``stempeg``) needs ``ffmpeg`` and ``ffprobe`` on PATH even to be imported; the
datamodule checks for them first and says what to install.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..dsp import resample
from ..errors import UserError
from .audio import AudioError, load_audio
from .base import MiniDataset, SeparationData
from .libri2mix import DatasetNotFoundError
from .loading import EvalSampler, item_rng, train_loader
from .musdb_mini import prepare_musdb18_mini

__all__ = [
    "FFmpegMissingError",
    "MUSDB18DataModule",
    "MusdbTrainDataset",
    "MusdbEvalDataset",
    "require_ffmpeg",
]

SOURCES = ("vocals", "drums", "bass", "other")
TARGETS = (*SOURCES, "accompaniment")


class FFmpegMissingError(UserError, RuntimeError):
    """ffmpeg / ffprobe are not on PATH."""


def require_ffmpeg(what: str = "musdb") -> None:
    """A clear error when ffmpeg/ffprobe (musdb, stempeg and museval need them) are missing."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise FFmpegMissingError(
            f"{what} needs {' and '.join(missing)} on PATH (even to be imported): install ffmpeg "
            "(`sudo apt-get install ffmpeg`, `conda install ffmpeg`, or `make install`, which "
            "does it on Debian/Ubuntu)"
        )


def open_musdb(root: str | Path, subset: str, split: str | None, is_wav: bool, setup_file=None):
    """A ``musdb.DB`` with errors that name the folder; empty selections are errors too."""
    root = Path(root)
    if not (root / subset).is_dir():
        raise DatasetNotFoundError(
            f"no MUSDB18 '{subset}' folder under {root}: point DATA= at a MUSDB18(-HQ) root "
            "(with train/ and test/), or run `zoo prepare musdb18-mini`"
        )
    require_ffmpeg()
    import musdb

    db = musdb.DB(root=str(root), subsets=subset, split=split, is_wav=is_wav, setup_file=setup_file)
    if len(db) == 0:
        layout = "<track>/mixture.wav folders" if is_wav else "*.stem.mp4 files"
        raise DatasetNotFoundError(
            f"{root / subset}: no tracks for split={split!r} (expected {layout}; is_wav={is_wav})"
        )
    return db


def _read(track, source: str | None, start: float | None, seconds: float | None) -> np.ndarray:
    """``(C, T)`` float32 of a source (``None``: the mixture) of a musdb track, or a chunk.

    MUSDB18-HQ wav files are read with soundfile directly (musdb would start two ffmpeg processes
    per read: 180 ms for a 2 s chunk, against under 1 ms); stem files go through musdb/stempeg.
    """
    path = track.path if source is None else track.sources[source].path
    if str(path).endswith(".wav"):
        rate = int(track.rate)
        first = int(round((start or 0.0) * rate))
        stop = None if seconds is None else first + int(round(seconds * rate))
        return load_audio(path, rate, first, stop)[0].numpy()
    track.chunk_start, track.chunk_duration = start or 0.0, seconds
    try:
        audio = track.audio if source is None else track.sources[source].audio
    except Exception as exc:  # stempeg errors: name the track and the source
        raise AudioError(f"cannot read {source or 'mixture'} of {path}: {exc}") from exc
    if not np.isfinite(audio).all():
        raise ValueError(f"{path}: {source or 'mixture'} holds NaN or Inf samples")
    return np.ascontiguousarray(audio.T, dtype=np.float32)


def _targets(sources: dict[str, torch.Tensor], targets: tuple[str, ...]) -> torch.Tensor:
    out = []
    for t in targets:
        if t == "accompaniment":
            out.append(sum(v for k, v in sources.items() if k != "vocals"))
        else:
            out.append(sources[t])
    return torch.stack(out)  # (S, C, T)


class MusdbTrainDataset(Dataset):
    """Augmented random chunks (Open-Unmix's training pipeline).

    Args:
        tracks: musdb tracks.
        targets: output targets (sources, or ``accompaniment`` = drums + bass + other).
        segment: chunk length in seconds.
        samples_per_track: items per track and epoch.
        random_track_mix: draw each source from a different random track.
        gain_range: uniform random gain per source; ``None``: none.
        channel_swap: swap left/right per source with probability 0.5.
        sample_rate: resample to this rate (``None``: the dataset's 44.1 kHz).
        random_channel: mono items: each source keeps one of its channels, drawn per source
            (the Meta-TasNet authors' training, ``dataset.py``'s ``random_channels``).
    """

    def __init__(
        self,
        tracks,
        targets=SOURCES,
        segment: float = 6.0,
        samples_per_track: int = 64,
        random_track_mix: bool = True,
        gain_range: tuple[float, float] | None = (0.25, 1.25),
        channel_swap: bool = True,
        sample_rate: int | None = None,
        random_channel: bool = False,
    ):
        self.random_channel = random_channel
        self.tracks, self.targets, self.segment = list(tracks), tuple(targets), segment
        self.samples_per_track, self.random_track_mix = samples_per_track, random_track_mix
        self.gain_range, self.channel_swap, self.sample_rate = gain_range, channel_swap, sample_rate

    def __len__(self) -> int:
        return len(self.tracks) * self.samples_per_track

    def __getitem__(self, idx: int) -> dict:
        rng = item_rng()
        sources = {}
        for s in SOURCES:
            track = (
                rng.choice(self.tracks)
                if self.random_track_mix
                else self.tracks[idx // self.samples_per_track]
            )
            start = rng.uniform(0, max(0.0, track.duration - self.segment))
            x = torch.from_numpy(_read(track, s, start, self.segment))
            x = _fit(x, int(round(self.segment * track.rate)))
            if self.gain_range:
                x = x * rng.uniform(*self.gain_range)
            if self.channel_swap and x.shape[0] == 2 and rng.random() < 0.5:
                x = x.flip(0)
            if self.random_channel:
                c = rng.randrange(x.shape[0])
                x = x[c : c + 1]
            sources[s] = resample(x, track.rate, self.sample_rate)
        mix = sum(sources.values())
        ref = _targets(sources, self.targets)
        return {"mix": mix, "ref": ref, "sources": ref, "id": f"train-{idx}"}


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad or cut ``(C, T)`` to ``n`` samples (tracks shorter than the segment)."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


class MusdbEvalDataset(Dataset):
    """Whole tracks (or their first ``max_seconds``) with the true mixture and targets."""

    def __init__(self, tracks, targets=SOURCES, max_seconds=None, sample_rate=None):
        self.tracks, self.targets = list(tracks), tuple(targets)
        self.max_seconds, self.sample_rate = max_seconds, sample_rate

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, idx: int) -> dict:
        track = self.tracks[idx]
        read = lambda s: resample(  # noqa: E731
            torch.from_numpy(_read(track, s, None, self.max_seconds)), track.rate, self.sample_rate
        )
        sources = {s: read(s) for s in SOURCES}
        ref = _targets(sources, self.targets)
        return {"mix": read(None), "sources": ref, "ref": ref, "id": track.name}


class MUSDB18DataModule(SeparationData):
    """MUSDB18 (``is_wav: false``) or MUSDB18-HQ (``is_wav: true``) for supervised training.

    Args:
        root: dataset root with ``train/`` and ``test/`` (the recipe fills it in).
        is_wav: MUSDB18-HQ wav folders (``True``) or MUSDB18 ``.stem.mp4`` files.
        targets: output targets, in output order (the backbone's ``sources``).
        setup_file: musdb setup file, relative to ``root`` (defines the validation tracks;
            ``None``: musdb's own, the official split).
        sample_rate: resample to this rate (``None``: 44.1 kHz as stored; recipes link it to the
            backbone's rate).
        segment: training chunk in seconds (Open-Unmix: 6).
        samples_per_track: training items per track and epoch (Open-Unmix: 64).
        random_track_mix, gain_range, channel_swap: the augmentations (see
            :class:`MusdbTrainDataset`).
        random_channel: train on mono items, one random channel per source (Meta-TasNet's
            training); validation and test stay stereo, each channel separated on its own, so
            only channel-independent backbones take it (``train_channels`` is then 1).
        val_seconds: validate on the first N seconds of each validation track (``None``: all).
        batch_size: training batch size (Open-Unmix: 16).
        num_workers: data loading processes.
        test_split: what ``trainer.test`` scores: ``test`` (the 50 test tracks) or ``valid``.
        limit_test_items: test on the first N tracks only (``None``: all).
    """

    mini = MiniDataset("musdb18-mini", "mini/MUSDB18-HQ", prepare_musdb18_mini)
    datasets = ("MUSDB18", "MUSDB18-HQ")
    headline_metric = ("sdr", "SDR (dB)")

    def __init__(
        self,
        root: str = "data/mini/MUSDB18-HQ",
        is_wav: bool = True,
        targets: list[str] = SOURCES,
        setup_file: str | None = None,
        sample_rate: int | None = None,
        segment: float = 6.0,
        samples_per_track: int = 64,
        random_track_mix: bool = True,
        gain_range: tuple[float, float] | None = (0.25, 1.25),
        channel_swap: bool = True,
        val_seconds: float | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        test_split: str = "test",
        limit_test_items: int | None = None,
        random_channel: bool = False,
    ):
        super().__init__()
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown MUSDB18 targets {unknown}: choose from {list(TARGETS)}")
        self.root, self.is_wav, self.targets = Path(root), is_wav, tuple(targets)
        self.setup_file, self.segment = setup_file, segment
        self.sample_rate = int(sample_rate or 44100)
        self.samples_per_track, self.random_track_mix = samples_per_track, random_track_mix
        self.gain_range, self.channel_swap = gain_range, channel_swap
        self.val_seconds, self.batch_size, self.num_workers = val_seconds, batch_size, num_workers
        if test_split not in ("test", "valid"):
            raise ValueError(f"test_split must be 'test' or 'valid', got {test_split!r}")
        if limit_test_items is not None and limit_test_items < 1:
            raise ValueError(
                f"limit_test_items must be at least 1 (or null: all), got {limit_test_items}"
            )
        self.test_split, self.limit_test_items = test_split, limit_test_items
        self.n_src = len(self.targets)
        self.source_names = list(self.targets)
        self.audio_channels = 2
        self.random_channel = random_channel
        self.train_channels = 1 if random_channel else 2
        self.dataset_name = "MUSDB18-HQ" if is_wav else "MUSDB18"

    def _db(self, subset: str, split: str | None):
        return open_musdb(self.root, subset, split, self.is_wav, self.setup_file)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None):
            self.train_set = MusdbTrainDataset(
                self._db("train", "train").tracks,
                self.targets,
                self.segment,
                self.samples_per_track,
                self.random_track_mix,
                self.gain_range,
                self.channel_swap,
                self.sample_rate,
                self.random_channel,
            )
        if stage in ("fit", "validate", None):
            self.val_set = MusdbEvalDataset(
                self._db("train", "valid").tracks, self.targets, self.val_seconds, self.sample_rate
            )
        if stage in ("test", None):
            db = self._db("test", None) if self.test_split == "test" else self._db("train", "valid")
            tracks = db.tracks[: self.limit_test_items]
            if not tracks:
                raise ValueError(f"{self.root}: no {self.test_split} tracks to test on")
            self.test_set = MusdbEvalDataset(tracks, self.targets, None, self.sample_rate)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_set, self.batch_size, self.num_workers)

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        return DataLoader(ds, batch_size=1, sampler=EvalSampler(ds), num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def describe(self) -> dict:
        """What the results file records about the data."""
        return {
            "dataset": self.dataset_name,
            "task": "+".join(self.targets),
            "sample_rate": self.sample_rate,
            "split": self.test_split,
            "root": str(self.root),
        }


class DatasetCheckError(UserError, ValueError):
    """A dataset copy with problems (each was printed on its own line)."""


MUSDB_TRACKS = {"train": 100, "test": 50}  # the 14 validation tracks are part of train
STEM_NAMES = ("mixture", *SOURCES)


def check_musdb(root: str | Path, tolerance: float = 1e-3, out=print) -> str:
    """Check a MUSDB18 (``.stem.mp4``) or MUSDB18-HQ (folders of WAVs) copy before a long run.

    Every track of ``train/`` (100, the official 14 validation tracks among them) and ``test/``
    (50): all five stems present and readable (decoded, for ``.stem.mp4``: ffmpeg needed), at
    44.1 kHz, stereo, of one length; for MUSDB18-HQ the four stems sum to the mixture within
    ``tolerance`` (peak difference, full scale 1). One line per problem naming the track and the
    stem (through ``out``), then the summary; problems end in :class:`DatasetCheckError`.
    """
    import yaml

    from .musdb_mini import _musdb_setup_path

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"MUSDB18 root not found: expected a folder at {root}")
    problems, n_tracks = [], {}
    try:  # the mini set's track decoded from MUSDB18's AAC stems: its mixture is no exact sum
        aac = {json.loads((root / ".zoo-mini.json").read_text()).get("stempeg_example")}
    except (OSError, ValueError, AttributeError):
        aac = set()
    stems = sorted(root.glob("*/*.stem.mp4"))
    hq = not stems
    for subset in MUSDB_TRACKS:
        tracks = (
            sorted(p for p in (root / subset).iterdir() if p.is_dir())
            if hq and (root / subset).is_dir()
            else sorted((root / subset).glob("*.stem.mp4"))
        )
        n_tracks[subset] = len(tracks)
        for track in tracks:
            name = track.name.removesuffix(".stem.mp4")
            try:
                audio = _read_hq(track) if hq else _read_stems(track)
            except (OSError, RuntimeError, ValueError) as exc:
                problems.append(f"{subset}/{name}: {exc}")
                continue
            lengths = {k: (len(v), rate, v.shape[1]) for k, (v, rate) in audio.items()}
            for stem, (_, rate, channels) in lengths.items():
                if rate != 44100 or channels != 2:
                    problems.append(f"{subset}/{name} {stem}: {rate} Hz, {channels} channel(s); "
                                    "MUSDB18 is 44.1 kHz stereo")  # fmt: skip
            n_mix = lengths["mixture"][0]
            short = [f"{s} ({n} samples)" for s, (n, _, _) in lengths.items() if n != n_mix]
            if short:
                problems.append(f"{subset}/{name}: {', '.join(short)} against the mixture's "
                                f"{n_mix}: truncated or mismatched stems")  # fmt: skip
            elif hq and name not in aac:
                total = sum(audio[s][0] for s in SOURCES)
                err = float(np.abs(total - audio["mixture"][0]).max())
                if err > tolerance:
                    problems.append(f"{subset}/{name}: the stems sum to the mixture only within "
                                    f"{err:.3g} (> {tolerance:g})")  # fmt: skip
    valid = yaml.safe_load(_musdb_setup_path().read_text()).get("validation_tracks") or []
    names = {p.name.removesuffix(".stem.mp4") for p in (root / "train").glob("*")}
    missing_valid = [v for v in valid if v not in names]
    counts = ", ".join(f"{n_tracks[s]} {s}" for s in MUSDB_TRACKS)
    kind = "MUSDB18-HQ (WAV folders)" if hq else "MUSDB18 (.stem.mp4)"
    if n_tracks != MUSDB_TRACKS:
        mini = " (the built-in mini set)" if (root / ".zoo-mini.json").is_file() else ""
        problems.insert(
            0,
            f"{root}: {counts} tracks{mini}; MUSDB18 has 100 train (the 14 validation tracks "
            "among them) and 50 test: not a full copy",
        )
    elif missing_valid:
        problems.append(f"{root}/train: {len(missing_valid)} of the official validation tracks "
                        f"are missing, e.g. {missing_valid[0]!r}")  # fmt: skip
    for line in problems:
        out(line)
    summary = f"{root}: {kind}, {counts} tracks checked, {len(problems)} problem(s)"
    if problems:
        raise DatasetCheckError(summary)
    return summary


def _read_hq(folder: Path) -> dict:
    import soundfile as sf

    out = {}
    for stem in STEM_NAMES:
        path = folder / f"{stem}.wav"
        if not path.is_file():
            raise ValueError(f"{stem}.wav is missing")
        try:
            x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except RuntimeError as exc:
            raise ValueError(f"{stem}.wav cannot be read ({exc})") from None
        out[stem] = (x, rate)
    return out


def _read_stems(path: Path) -> dict:
    require_ffmpeg("checking MUSDB18 .stem.mp4 files")
    import stempeg

    try:
        audio, rate = stempeg.read_stems(str(path), dtype=np.float32)  # (5, T, C)
    except Exception as exc:  # noqa: BLE001 - ffmpeg's failures come in many types
        raise ValueError(f"cannot be decoded ({str(exc).strip().splitlines()[-1][:120]})") from None
    if audio.shape[0] != 5:
        raise ValueError(f"{audio.shape[0]} streams; a MUSDB18 stem file has 5")
    return {stem: (audio[i], int(rate)) for i, stem in enumerate(STEM_NAMES)}


MUSDB18DataModule.tools = {"musdb18": check_musdb}  # zoo prepare musdb18 --root DIR --check
