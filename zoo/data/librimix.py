"""Libri2Mix built from LibriSpeech, item by item, exactly as the LibriMix scripts write it.

LibriMix (Cosentino et al. 2020) publishes, per subset, a metadata CSV
(``metadata/Libri2Mix/libri2mix_<subset>.csv``: ``mixture_ID, source_1_path, source_1_gain,
source_2_path, source_2_gain, noise_path, noise_gain``; paths relative to the LibriSpeech and
WHAM! roots) and a script that turns it into ~430 GB of WAV files. The script's procedure
(``scripts/create_librimix_from_metadata.py``), which :func:`librimix_item` follows step for step:

1. read each LibriSpeech source (FLAC, 16 kHz) as float32; read the WHAM! noise up to the
   longest source's length (first channel), extended by Hann cross-fades when shorter;
2. multiply each by its gain (the loudness normalisation the metadata fixed);
3. resample each from 16 kHz with ``scipy.signal.resample_poly(x, rate, 16000)``;
4. fit the lengths: ``min`` truncates every signal to the shortest, ``max`` zero-pads to the
   longest (the noise counts, and is never the shortest);
5. the mixture is the sum (``mix_clean``: the sources; ``mix_both``: and the noise;
   ``mix_single``: source 1 and the noise); files are written as 16-bit PCM.

So ``sep_clean`` needs no noise set at all, and the published test split is exactly the one the
literature reports on. Resampling uses scipy's ``resample_poly``, not the zoo's soxr (the other
resampler in :mod:`zoo.dsp`): the signals must be the published ones, and the two filters differ
by far more than PCM16 rounding (measured in ``tests/unit/data/test_librimix.py``).

:class:`DynamicMixing` draws new mixtures every epoch from the training subset's utterances
(two speakers, LibriMix's loudness range), as a deterministic function of (seed, epoch, item):
resumed runs draw the same items, and DDP ranks draw disjoint ones.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..errors import UserError
from .audio import AudioError

__all__ = [
    "DynamicMixing",
    "EpochSampler",
    "LibriMixMetadata",
    "LibriMixOnTheFly",
    "SUBSET_DIRS",
    "extend_noise",
    "librimix_item",
    "metadata_csv",
]

RATE = 16000  # LibriSpeech's rate: what the metadata's gains and the resampling start from
# the Libri2Mix folder names of the LibriSpeech subsets (the script's own renaming)
SUBSET_DIRS = {"train-360": "train-clean-360", "train-100": "train-clean-100",
               "dev": "dev-clean", "test": "test-clean"}  # fmt: skip
MIN_LOUDNESS, MAX_LOUDNESS = -33.0, -25.0  # LibriMix's target loudness range (LUFS)


def metadata_csv(metadata: Path, subset: str, n_src: int = 2) -> Path:
    """The LibriMix metadata CSV of a Libri2Mix subset (``train-100`` ...)."""
    if subset not in SUBSET_DIRS:
        raise ValueError(f"unknown Libri2Mix subset {subset!r}: choose one of {list(SUBSET_DIRS)}")
    path = Path(metadata) / f"libri{n_src}mix_{SUBSET_DIRS[subset]}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"LibriMix metadata not found: expected {path} (data.init_args.metadata names the "
            "folder metadata/Libri2Mix of a LibriMix checkout; `zoo prepare libri2mix-metadata "
            "--out DIR` downloads it)"
        )
    return path


class LibriMixMetadata:
    """The rows of a LibriMix metadata CSV, checked, with paths resolved under the roots.

    Args:
        csv_path: ``libri2mix_<subset>.csv``.
        librispeech: the LibriSpeech root (holding ``train-clean-100/`` ...).
        wham: the WHAM! noise root (``wham_noise/``, holding ``tr/ cv/ tt/``), or ``None``.
    """

    def __init__(self, csv_path: Path, librispeech: Path, wham: Path | None = None, n_src=2):
        self.csv_path, self.librispeech, self.wham = Path(csv_path), Path(librispeech), wham
        self.n_src = n_src
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            cols = ["mixture_ID"] + [
                f"source_{i + 1}_{k}" for i in range(n_src) for k in ("path", "gain")
            ]
            missing = set(cols) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{self.csv_path}: missing columns {sorted(missing)}")
            self.rows = list(reader)
        for line, row in enumerate(self.rows, start=2):
            row["_line"] = line
            for key in [c for c in row if c.endswith("_gain")]:
                try:
                    row[key] = float(row[key])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{self.csv_path}: row {line}, column {key}: {row[key]!r} is not a number"
                    ) from None

    def __len__(self) -> int:
        return len(self.rows)

    def source(self, row: dict, i: int) -> Path:
        return self.librispeech / row[f"source_{i + 1}_path"]

    def noise(self, row: dict) -> Path:
        if self.wham is None:
            raise ValueError(
                f"{self.csv_path}: this task mixes in WHAM! noise: give its root as "
                "data.init_args.wham (sep_clean needs none)"
            )
        return Path(self.wham) / row["noise_path"]


def _read(path: Path, context: str, stop: int | None = None) -> np.ndarray:
    import soundfile as sf

    try:
        x, rate = sf.read(str(path), dtype="float32", stop=stop)
    except (OSError, RuntimeError) as exc:  # soundfile's errors
        raise AudioError(f"{path} ({context}): cannot be read ({exc})") from None
    if rate != RATE:
        raise AudioError(f"{path} ({context}): {rate} Hz; LibriSpeech and WHAM! are 16 kHz")
    if x.ndim > 1:  # WHAM! noises are stereo: the script takes the first channel
        x = x[:, 0]
    if not np.isfinite(x).all():
        raise AudioError(f"{path} ({context}): holds NaN or Inf samples")
    return x


def extend_noise(noise: np.ndarray, length: int) -> np.ndarray:
    """A noise shorter than the sources, extended by repeating it with a Hann cross-fade of
    half a second each side (LibriMix's ``extend_noise``)."""
    window = np.hanning(RATE + 1)
    rise, fall = window[: len(window) // 2 + 1], window[len(window) // 2 :: -1]
    out = noise
    while len(out) < length:
        head = out[: len(out) - len(fall)]
        cross = out[len(out) - len(fall) :] * fall + noise[: len(rise)] * rise
        out = np.concatenate((head, cross, noise[len(rise) :]))
    return out[:length]


def fit_lengths(signals: list[np.ndarray], mode: str) -> list[np.ndarray]:
    """Truncate every signal to the shortest (``min``) or zero-pad to the longest (``max``)."""
    if mode == "min":
        n = min(len(s) for s in signals)
        return [s[:n] for s in signals]
    n = max(len(s) for s in signals)
    return [np.pad(s, (0, n - len(s))) for s in signals]


def librimix_item(
    sources: list[np.ndarray],
    gains: list[float],
    rate: int,
    mode: str,
    noise: np.ndarray | None = None,
    noise_gain: float | None = None,
) -> list[np.ndarray]:
    """Steps 2-4 of the module docstring: gain, ``resample_poly`` to ``rate``, length rule.
    Returns the transformed sources (and noise last, when given), float64."""
    from scipy.signal import resample_poly

    signals = [s * g for s, g in zip(sources, gains, strict=True)]
    if noise is not None:
        signals.append(noise * noise_gain)
    return fit_lengths([resample_poly(s, rate, RATE) for s in signals], mode)


class LibriMixOnTheFly(Dataset):
    """One Libri2Mix subset built from LibriSpeech (and WHAM!) as items are read: the
    ``mix_clean`` / ``mix_both`` / ``mix_single`` mixture and ``s1``, ``s2`` the LibriMix
    script would write (same gains, resampling, length rule and mixture IDs), in float.

    Args:
        metadata: the subset's rows (:class:`LibriMixMetadata`).
        task: ``sep_clean``, ``sep_noisy`` or ``enh_single``.
        sample_rate: 8000 or 16000.
        mode: ``min`` or ``max``.
        segment: seconds per item (``None``: whole mixtures), at a random offset or the start.
        random_segments: random offsets (training) or the first ``segment`` seconds.

    Items: ``mix`` ``(1, T)``, ``sources`` ``(n_src, 1, T)``, ``id``.
    """

    def __init__(self, metadata: LibriMixMetadata, task: str, sample_rate: int, mode: str,
                 segment: float | None = None, random_segments: bool = True):  # fmt: skip
        self.md, self.task, self.sample_rate, self.mode = metadata, task, sample_rate, mode
        self.seg_len = None if segment is None else int(round(segment * sample_rate))
        self.random_segments = random_segments
        self.n_src = 1 if task == "enh_single" else 2
        self.rows = metadata.rows

    def __len__(self) -> int:
        return len(self.rows)

    def signals(self, idx: int) -> tuple[list[np.ndarray], np.ndarray | None]:
        """The transformed sources and noise (``None`` for ``sep_clean``) of row ``idx``."""
        row = self.rows[idx]
        ctx = f"{self.md.csv_path} row {row['_line']}"
        n = self.md.n_src
        srcs = [_read(self.md.source(row, i), f"{ctx}, source_{i + 1}_path") for i in range(n)]
        gains = [row[f"source_{i + 1}_gain"] for i in range(n)]
        if self.task == "sep_clean":  # no noise is read: its length never decides (docstring)
            return librimix_item(srcs, gains, self.sample_rate, self.mode), None
        longest = max(len(s) for s in srcs)
        noise = _read(self.md.noise(row), f"{ctx}, noise_path", stop=longest)
        if len(noise) < longest:
            noise = extend_noise(noise, longest)
        *out, noise = librimix_item(
            srcs, gains, self.sample_rate, self.mode, noise, float(row["noise_gain"])
        )
        return out, noise

    def item(self, idx: int, rng=None) -> dict:
        """Item ``idx``, its segment placed with ``rng`` (``None``: the process's)."""
        from .loading import item_rng

        sources, noise = self.signals(idx)
        if self.task == "sep_clean":
            mix, refs = sum(sources), sources
        elif self.task == "sep_noisy":
            mix, refs = sum(sources) + noise, sources
        else:  # enh_single: source 1 in noise
            mix, refs = sources[0] + noise, sources[:1]
        both = torch.from_numpy(np.stack([mix, *refs]).astype(np.float32))[:, None]  # (1+S, 1, T)
        pos = (rng or item_rng()).random() if self.random_segments else 0.0
        both = _segment(both, self.seg_len, pos)
        return {"mix": both[0], "sources": both[1:], "id": self.rows[idx]["mixture_ID"]}

    def __getitem__(self, idx: int) -> dict:
        return self.item(idx)

    def read_mixture(self, idx: int, rng=None) -> torch.Tensor:
        """The mixture of item ``idx`` alone (MixIT), ``(1, T)``."""
        return self.item(idx, rng)["mix"]


def _segment(x: torch.Tensor, n: int | None, pos: float) -> torch.Tensor:
    """``n`` samples of ``x`` ``(..., T)`` starting at ``pos`` (0-1) of the room there is;
    zero-padded at the end when ``x`` is shorter (training batches need one length)."""
    if n is None:
        return x
    t = x.shape[-1]
    if t < n:
        return torch.nn.functional.pad(x, (0, n - t))
    start = int(pos * (t - n))
    return x[..., start : start + n]


TYPES = {"mix_clean": (0, 1), "mix_both": (0, 1, "noise"), "mix_single": (0, "noise")}
METADATA_URL = "https://raw.githubusercontent.com/JorisCos/LibriMix/master/metadata/Libri2Mix"


def _write_once(path: Path, data: np.ndarray, rate: int) -> None:
    """Write a 16-bit PCM WAV through a temporary file renamed into place (a killed run
    leaves no partial file; a finished one is never rewritten)."""
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.part")
    try:
        sf.write(str(tmp), data, rate, subtype="PCM_16", format="WAV")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_libri2mix(
    librispeech: str | Path,
    metadata: str | Path,
    out: str | Path,
    wham: str | Path | None = None,
    freqs: tuple[str, ...] = ("8k",),
    modes: tuple[str, ...] = ("min",),
    quiet: bool = False,
) -> list[Path]:
    """Write the classic Libri2Mix tree (what the LibriMix script writes) from LibriSpeech:
    ``<out>/wav<freq>/<mode>/<subset>/{s1,s2,mix_clean[,mix_both,mix_single,noise]}/<ID>.wav``
    and ``<out>/wav<freq>/<mode>/metadata/mixture_<subset>_<type>.csv``.

    Resumable: a mixture whose files are all there is skipped (files are written whole, through
    a temporary file). Nothing is deleted; an existing metadata CSV that differs from the one
    this would write is refused, not replaced. Without ``wham``, only ``mix_clean`` (and the
    sources) are written: it is all ``sep_clean`` needs.
    """
    from tqdm import tqdm

    librispeech, metadata, out = Path(librispeech), Path(metadata), Path(out)
    wham = Path(wham) if wham else None
    csvs = sorted(p for p in metadata.glob("libri2mix_*.csv") if not p.stem.endswith("_info"))
    if not csvs:
        raise FileNotFoundError(
            f"no libri2mix_<subset>.csv in {metadata}: give LibriMix's metadata/Libri2Mix "
            "folder (zoo prepare libri2mix-metadata)"
        )
    subsets = {v: k for k, v in SUBSET_DIRS.items()}
    types = list(TYPES) if wham else ["mix_clean"]
    written = []
    for csv_path in csvs:
        name = csv_path.stem.removeprefix("libri2mix_")
        if name not in subsets:
            continue
        subset = subsets[name]
        md = LibriMixMetadata(csv_path, librispeech, wham)
        for freq in freqs:
            rate = int(freq.lower().removesuffix("k")) * 1000
            for mode in modes:
                base = out / f"wav{freq.lower()}" / mode
                task = "sep_noisy" if wham else "sep_clean"
                ds = LibriMixOnTheFly(md, task, rate, mode, segment=None, random_segments=False)
                dirs = ["s1", "s2", *types, *(["noise"] if wham else [])]
                for d in dirs:
                    (base / subset / d).mkdir(parents=True, exist_ok=True)
                tables = {t: [] for t in types}
                desc = f"wav{freq}/{mode}/{subset}"
                for i, row in enumerate(tqdm(md.rows, desc=desc, disable=quiet, unit="mix")):
                    paths = {d: (base / subset / d / f"{row['mixture_ID']}.wav").resolve()
                             for d in dirs}  # fmt: skip
                    if not all(p.is_file() for p in paths.values()):
                        sources, noise = ds.signals(i)
                        sig = {0: sources[0], 1: sources[1], "noise": noise}
                        for d in dirs:
                            data = sig[int(d[1]) - 1] if d in ("s1", "s2") else sig.get(d)
                            if d in TYPES:
                                data = sum(sig[k] for k in TYPES[d])
                            if not paths[d].is_file():
                                _write_once(paths[d], data, rate)
                    n = sf_frames(paths["s1"])
                    for t in types:
                        cols = [paths["s1"], paths["s2"]] if t != "mix_single" else [paths["s1"]]
                        cols += [paths["noise"]] if t != "mix_clean" else []
                        tables[t].append([row["mixture_ID"], paths[t], *cols, n])
                meta = base / "metadata"
                meta.mkdir(parents=True, exist_ok=True)
                for t in types:
                    written.append(_write_table(meta / f"mixture_{subset}_{t}.csv", t, tables[t]))
    return written


def sf_frames(path: Path) -> int:
    import soundfile as sf

    return sf.info(str(path)).frames


def _write_table(path: Path, kind: str, rows: list[list]) -> Path:
    """A Libri2Mix mixture CSV (the script's columns); an existing different one is refused."""
    import io

    head = ["mixture_ID", "mixture_path", "source_1_path"]
    head += ["source_2_path"] if kind != "mix_single" else []
    head += ["noise_path"] if kind != "mix_clean" else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*head, "length"])
    w.writerows([[str(x) for x in r] for r in rows])
    text = buf.getvalue()
    if path.is_file():
        if path.read_text() != text:
            raise FileExistsError(
                f"{path} exists and differs from the table this run writes: move it away "
                "(nothing is replaced), or write into another --out"
            )
        return path  # the same table: left as it is
    path.write_text(text)
    return path


class DownloadFailed(UserError, ConnectionError):
    """The metadata could not be fetched."""


def download_metadata(out: str | Path, url: str = METADATA_URL) -> list[Path]:
    """Fetch LibriMix's Libri2Mix metadata (``libri2mix_<subset>.csv``, four subsets) into
    ``out``. Files already there and equal are kept; a different one is refused."""
    import urllib.error
    import urllib.request

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SUBSET_DIRS.values():
        target = out / f"libri2mix_{name}.csv"
        src = f"{url.rstrip('/')}/{target.name}"
        try:
            with urllib.request.urlopen(src, timeout=60) as r:
                data = r.read()
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadFailed(
                f"cannot fetch {src} ({exc}): check the network, or give a LibriMix checkout's "
                "metadata/Libri2Mix folder instead"
            ) from None
        header = data.split(b"\n", 1)[0].decode(errors="replace")
        if not header.startswith("mixture_ID,source_1_path,source_1_gain"):
            raise ValueError(f"{src}: not a LibriMix metadata file (header {header[:60]!r})")
        if target.is_file() and target.read_bytes() != data:
            raise FileExistsError(f"{target} exists and differs from {src}: nothing replaced")
        if not target.is_file():
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(data)
            tmp.replace(target)
        paths.append(target)
    return paths


class EpochSampler(DistributedSampler):
    """The training sampler of dynamic mixing: this rank's share of a shuffled epoch (as
    ``DistributedSampler``: disjoint between ranks, seeded by seed and epoch), yielding
    ``(epoch, item)`` pairs so that an item's random draws depend on nothing else. Lightning
    calls ``set_epoch`` at every epoch and keeps a ``DistributedSampler`` under DDP."""

    def __init__(self, dataset: Dataset, seed: int):
        import torch.distributed as dist

        ddp = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if ddp else 1,
            rank=dist.get_rank() if ddp else 0,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )

    def __iter__(self):
        return ((self.epoch, i) for i in super().__iter__())


class DynamicMixing(Dataset):
    """New training mixtures every epoch from a subset's utterances (the technique behind the
    best published Libri2Mix / WSJ0-2mix results): item ``i`` of epoch ``e`` pairs two
    utterances of different speakers, drawn with a generator seeded by ``(seed, e, i)``, at
    levels drawn in LibriMix's loudness range (-33 to -25, as RMS dBFS: ours, the script's
    K-weighted LUFS would need ``pyloudnorm``), scaled down together when the mixture would
    exceed 0.9 (as the script), resampled with ``resample_poly`` and cut to a random segment.

    Args:
        metadata: the training subset's rows: their utterances are the pool (speaker = the
            LibriSpeech folder above the chapter).
        sample_rate, mode, segment: as :class:`LibriMixOnTheFly`.
        seed: the run's seed.

    Index with ``(epoch, item)`` (:class:`EpochSampler`). Items: ``mix`` ``(1, T)``,
    ``sources`` ``(2, 1, T)``, ``id`` (``<utt1>_<utt2>@<epoch>``).
    """

    def __init__(self, metadata: LibriMixMetadata, sample_rate: int, mode: str,
                 segment: float | None, seed: int = 0):  # fmt: skip
        self.md, self.sample_rate, self.mode, self.seed = metadata, sample_rate, mode, seed
        self.seg_len = None if segment is None else int(round(segment * sample_rate))
        utts = {}
        for row in metadata.rows:
            for i in range(metadata.n_src):
                rel = row[f"source_{i + 1}_path"]
                utts[rel] = Path(rel).parts[-3] if len(Path(rel).parts) >= 3 else rel
        self.utterances = sorted(utts)  # (relative path), speaker = utts[path]
        self.speaker = [utts[u] for u in self.utterances]
        if len(set(self.speaker)) < 2:
            raise ValueError(f"{metadata.csv_path}: dynamic mixing needs two speakers or more")
        self.n_items = len(metadata)

    def __len__(self) -> int:
        return self.n_items

    def draw(self, epoch: int, idx: int) -> tuple[str, str, float, float, float]:
        """The two utterances, their levels (dBFS) and the segment position (0-1) of item
        ``idx`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, idx])
        a = int(rng.integers(len(self.utterances)))
        b = int(rng.integers(len(self.utterances) - 1))
        b += b >= a
        while self.speaker[b] == self.speaker[a]:
            b = int(rng.integers(len(self.utterances)))
        levels = rng.uniform(MIN_LOUDNESS, MAX_LOUDNESS, size=2)
        return self.utterances[a], self.utterances[b], *levels, float(rng.random())

    def __getitem__(self, key) -> dict:
        epoch, idx = key if isinstance(key, tuple) else (0, key)
        ua, ub, la, lb, pos = self.draw(epoch, idx)
        ctx = f"dynamic mixing of {self.md.csv_path}"
        srcs = [_read(self.md.librispeech / u, ctx) for u in (ua, ub)]
        gains = [10 ** (lvl / 20) / (math.sqrt(float(np.mean(s**2))) + 1e-9)
                 for s, lvl in zip(srcs, (la, lb), strict=True)]  # fmt: skip
        scaled = fit_lengths([s * g for s, g in zip(srcs, gains, strict=True)], self.mode)
        peak = max(float(np.abs(x).max()) for x in [*scaled, scaled[0] + scaled[1]])
        if peak > 0.9:  # the script's clipping rule: everything scaled down together
            gains = [g * 0.9 / peak for g in gains]
        sources = librimix_item(srcs, gains, self.sample_rate, self.mode)
        refs = torch.from_numpy(np.stack(sources).astype(np.float32))[:, None]  # (2, 1, T)
        refs = _segment(refs, self.seg_len, pos)
        name = f"{Path(ua).stem}_{Path(ub).stem}@{epoch}"
        return {"mix": refs.sum(0), "sources": refs, "id": name}
