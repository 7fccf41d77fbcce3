"""Libri2Mix (Cosentino et al. 2020) read from its real on-disk format.

``root`` is the ``Libri2Mix`` folder; files are found through
``<root>/wav{8k,16k}/{min,max}/metadata/mixture_<subset>_<mix_type>.csv``. The CSVs hold absolute
paths from the machine that generated the data; when such a path does not exist, the part after
``wav<sr>k/<mode>/`` is looked up under ``root`` instead, so a moved dataset still loads.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .audio import AudioError, read_audio
from .base import MiniDataset, SeparationData
from .librimix import (
    SUBSET_DIRS,
    DynamicMixing,
    EpochSampler,
    LibriMixMetadata,
    LibriMixOnTheFly,
    download_metadata,
    metadata_csv,
    write_libri2mix,
)
from .loading import EvalSampler, item_rng, train_loader
from .mini import prepare_libri2mix_mini

__all__ = [
    "Libri2MixDataset",
    "MixtureOfMixtures",
    "Libri2MixDataModule",
    "TASKS",
    "EvalSampler",
    "train_loader",
    "DatasetNotFoundError",
]

# task -> (mixture type in the CSV name, source columns)
TASKS = {
    "sep_clean": ("mix_clean", ("source_1_path", "source_2_path")),
    "sep_noisy": ("mix_both", ("source_1_path", "source_2_path")),
    "enh_single": ("mix_single", ("source_1_path",)),
}
SUBSETS = ("train-360", "train-100", "dev", "test")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder or its metadata is not where the configuration says."""


def metadata_path(root: Path, sample_rate: int, mode: str, subset: str, task: str) -> Path:
    if task not in TASKS:
        raise ValueError(f"unknown Libri2Mix task {task!r}: choose one of {sorted(TASKS)}")
    if subset not in SUBSETS:
        raise ValueError(f"unknown Libri2Mix subset {subset!r}: choose one of {list(SUBSETS)}")
    if sample_rate not in (8000, 16000):
        raise ValueError(f"Libri2Mix comes at 8000 or 16000 Hz, not {sample_rate}")
    if mode not in ("min", "max"):
        raise ValueError(f"Libri2Mix mode must be 'min' or 'max', not {mode!r}")
    base = root / f"wav{sample_rate // 1000}k" / mode
    csv_path = base / "metadata" / f"mixture_{subset}_{TASKS[task][0]}.csv"
    if not csv_path.is_file():
        hint = (
            "point DATA= (or --data.init_args.root) at the Libri2Mix folder made by the LibriMix "
            "scripts, or build the built-in mini set with `zoo prepare libri2mix-mini`"
        )
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"Libri2Mix root not found: expected a folder at {root}; {hint}"
            )
        rates = sorted(p.name for p in root.glob("wav*k") if p.is_dir())
        if rates and not base.parent.is_dir():
            raise DatasetNotFoundError(
                f"{root} has {', '.join(rates)} but no wav{sample_rate // 1000}k: the data are "
                f"read at the model's rate, {sample_rate} Hz; use a model trained at that rate, "
                "or generate that rate with the LibriMix scripts"
            )
        raise DatasetNotFoundError(f"Libri2Mix metadata not found: expected {csv_path}; {hint}")
    return csv_path


class Libri2MixDataset(Dataset):
    """One subset of Libri2Mix for one task.

    Args:
        root: the ``Libri2Mix`` folder.
        subset: ``train-360``, ``train-100``, ``dev`` or ``test``.
        task: ``sep_clean``, ``sep_noisy`` or ``enh_single``.
        sample_rate: 8000 or 16000.
        mode: ``min`` or ``max``.
        segment: seconds per item, drawn at a random offset (``None``: whole utterances).
            Utterances shorter than a segment are dropped.
        random_segments: random offsets (training) or the first ``segment`` seconds (evaluation).

    Items are dicts: ``mix`` ``(1, T)``, ``sources`` ``(n_src, 1, T)``, ``id``.
    """

    def __init__(
        self,
        root: str | Path,
        subset: str = "test",
        task: str = "sep_clean",
        sample_rate: int = 8000,
        mode: str = "min",
        segment: float | None = None,
        random_segments: bool = True,
    ):
        self.root = Path(root)
        self.csv_path = metadata_path(self.root, sample_rate, mode, subset, task)
        self.subset, self.task, self.sample_rate, self.mode = subset, task, sample_rate, mode
        self.source_cols = TASKS[task][1]
        self.n_src = len(self.source_cols)
        self.random_segments = random_segments
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"mixture_ID", "mixture_path", "length", *self.source_cols} - set(
                reader.fieldnames or ()
            )
            if missing:
                raise ValueError(f"{self.csv_path}: missing columns {sorted(missing)}")
            rows = list(reader)
        for line, r in enumerate(rows, start=2):  # line 1 is the header
            r["_line"] = line
            try:
                r["length"] = int(r["length"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.csv_path}: row {line}, column length: {r['length']!r} is not a whole "
                    "number of samples"
                ) from None
        self.seg_len = None if segment is None else int(round(segment * sample_rate))
        if self.seg_len is not None:
            kept = [r for r in rows if r["length"] >= self.seg_len]
            if not kept:
                raise ValueError(
                    f"{self.csv_path}: no utterance is as long as the {segment} s segment"
                )
        else:
            kept = rows
        self.n_dropped = len(rows) - len(kept)
        self.rows = kept

    def __len__(self) -> int:
        return len(self.rows)

    def resolve(self, path: str) -> Path:
        """The file a CSV path names, falling back to its place under ``root`` when moved."""
        p = Path(path)
        if p.is_file():
            return p
        marker = f"wav{self.sample_rate // 1000}k"
        parts = p.parts
        if marker in parts:
            i = len(parts) - 1 - parts[::-1].index(marker)
            moved = self.root.joinpath(*parts[i:])
            if moved.is_file():
                return moved
        if not p.is_absolute():
            rel = self.root / p
            if rel.is_file():
                return rel
        return p  # read_audio names it in its error

    def _span(self, idx: int, rng: random.Random | None) -> tuple[int, int | None]:
        if self.seg_len is None:
            return 0, None
        length = self.rows[idx]["length"]
        start = 0
        if self.random_segments:
            start = (rng or random).randint(0, length - self.seg_len)
        return start, start + self.seg_len

    def read(self, idx: int, column: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        row = self.rows[idx]
        ctx = f"{self.csv_path} row {row['_line']}, column {column}"
        path = self.resolve(row[column])
        x = read_audio(path, self.sample_rate, start, stop, context=ctx)
        if x.shape[0] != 1:
            raise AudioError(f"{path} ({ctx}): {x.shape[0]} channels; Libri2Mix files are mono")
        want = (stop - start) if stop is not None else row["length"] - start
        if x.shape[-1] != want:
            raise AudioError(
                f"{path} ({ctx}): {start + x.shape[-1]} samples, but the CSV's length column "
                f"says {row['length']}: the file is truncated or the CSV is out of date"
            )
        return x

    def read_mixture(self, idx: int, rng: random.Random | None = None) -> torch.Tensor:
        start, stop = self._span(idx, rng)
        return self.read(idx, "mixture_path", start, stop)  # (1, T)

    def item(self, idx: int, rng: random.Random | None = None) -> dict:
        """Item ``idx``, its segment placed with ``rng`` (``None``: the process's)."""
        start, stop = self._span(idx, rng)
        mix = self.read(idx, "mixture_path", start, stop)  # (1, T)
        sources = torch.stack([self.read(idx, c, start, stop) for c in self.source_cols])
        return {"mix": mix, "sources": sources, "id": self.rows[idx]["mixture_ID"]}

    def __getitem__(self, idx: int) -> dict:
        return self.item(idx)


class MixtureOfMixtures(Dataset):
    """MixIT training items: the sum of two mixtures, with the two mixtures as references.

    With ``supervised_share > 0`` (semi-supervised MixIT), that share of the items instead holds
    an ordinary mixture with its true sources as references and ``supervised=True``. Unsupervised
    items never read a source file.

    Items: ``mix`` ``(1, T)``, ``ref`` ``(2, 1, T)``, ``supervised`` (bool), ``id``.
    """

    def __init__(self, base: Libri2MixDataset, supervised_share: float = 0.0):
        if not 0.0 <= supervised_share <= 1.0:
            raise ValueError(f"supervised_share must be in [0, 1], got {supervised_share}")
        if supervised_share > 0 and base.n_src != 2:
            raise ValueError(
                f"semi-supervised MixIT needs two sources per mixture, task {base.task!r} has "
                f"{base.n_src}"
            )
        self.base, self.supervised_share = base, supervised_share

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict:
        rng = item_rng()
        if rng.random() < self.supervised_share:
            item = self._supervised(idx, rng)
            return {
                "mix": item["sources"].sum(0),
                "ref": item["sources"],
                "supervised": True,
                "id": item["id"],
            }
        other = rng.randrange(len(self.base) - 1)
        other += other >= idx  # a different mixture
        m1 = self.base.read_mixture(idx, rng)
        m2 = self.base.read_mixture(other, rng)
        ref = torch.stack([m1, m2])  # (2, 1, T)
        return {
            "mix": ref.sum(0),
            "ref": ref,
            "supervised": False,
            "id": f"{self.base.rows[idx]['mixture_ID']}+{self.base.rows[other]['mixture_ID']}",
        }

    def _supervised(self, idx: int, rng: random.Random) -> dict:
        return self.base.item(idx, rng)


class _SupervisedTrain(Dataset):
    """PIT / Hungarian training items: random segments with the true sources as references."""

    def __init__(self, base: Libri2MixDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict:
        item = self.base[idx]
        return {"mix": item["mix"], "ref": item["sources"], "supervised": True, "id": item["id"]}


class Libri2MixDataModule(SeparationData):
    """Libri2Mix for training with PIT / Hungarian (sources), MixIT or semi-supervised MixIT.

    Two sources of items: the ``Libri2Mix`` folder the LibriMix scripts write (``root``), or,
    with ``metadata``, LibriSpeech itself: ``root`` is then the LibriSpeech folder and every
    item is built as it is read, exactly as the scripts would have written it
    (:mod:`zoo.data.librimix`; ``sep_clean`` needs no noise set, ``sep_noisy`` / ``enh_single``
    the WHAM! root in ``wham``), with no file written anywhere.

    Args:
        root: the ``Libri2Mix`` folder (the recipe fills it in: ``DATA=`` or the mini set); with
            ``metadata``, the LibriSpeech folder (holding ``train-clean-100/`` ...).
        task: ``sep_clean``, ``sep_noisy`` or ``enh_single``.
        sample_rate: 8000 or 16000.
        mode: ``min`` or ``max``.
        train_subset: ``train-360`` or ``train-100``.
        train_on: ``sources`` (PIT, Hungarian) or ``mixtures`` (MixIT: mixtures of two mixtures;
            the sources are never read in training).
        supervised_share: with ``train_on: mixtures``, the share of items trained on sources
            (semi-supervised MixIT).
        segment: training segment in seconds.
        val_segment: validation segment in seconds from the start of each utterance (``None``:
            whole utterances, batch size 1).
        batch_size: training batch size.
        num_workers: data loading processes.
        limit_val_items: validate on the first N dev items only (``None``: all).
        test_split: the subset ``trainer.test`` scores: ``test`` or ``dev``.
        limit_test_items: test on the first N items of that subset only (``None``: all).
        metadata: LibriMix's metadata folder (``metadata/Libri2Mix`` of a LibriMix checkout, or
            what ``zoo prepare libri2mix-metadata`` downloads): build Libri2Mix from
            LibriSpeech (``root``) on the fly.
        wham: the WHAM! noise root (``wham_noise/``), for ``sep_noisy`` and ``enh_single`` on
            the fly.
        dynamic_mixing: train on new mixtures every epoch, drawn from the training subset's
            utterances (needs ``metadata``; validation and test stay on the fixed metadata).
        seed: the seed of dynamic mixing's draws (with the epoch and the item).

    Validation and test items always carry the true sources, whatever the training targets.
    """

    mini = MiniDataset("libri2mix-mini", "mini/Libri2Mix", prepare_libri2mix_mini)
    tools = {"libri2mix": write_libri2mix, "libri2mix-metadata": download_metadata}
    datasets = ("Libri2Mix",)
    headline_metric = ("si_sdri", "SI-SDRi (dB)")

    def __init__(
        self,
        root: str = "data/mini/Libri2Mix",
        task: str = "sep_clean",
        sample_rate: int = 8000,
        mode: str = "min",
        train_subset: str = "train-360",
        train_on: str = "sources",
        supervised_share: float = 0.0,
        segment: float = 3.0,
        val_segment: float | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        limit_val_items: int | None = None,
        test_split: str = "test",
        limit_test_items: int | None = None,
        metadata: str | None = None,
        wham: str | None = None,
        dynamic_mixing: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if test_split not in ("test", "dev"):
            raise ValueError(
                f"test_split must be 'test' or 'dev' for Libri2Mix, got {test_split!r}"
            )
        if train_on not in ("sources", "mixtures"):
            raise ValueError(f"train_on must be 'sources' or 'mixtures', got {train_on!r}")
        if task not in TASKS:
            raise ValueError(
                f"unknown Libri2Mix task {task!r} (data.init_args.task): choose one of "
                f"{', '.join(TASKS)}"
            )
        for name, value in (("limit_val_items", limit_val_items),
                            ("limit_test_items", limit_test_items)):  # fmt: skip
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or null: all), got {value}")
        self.root, self.task, self.sample_rate, self.mode = Path(root), task, sample_rate, mode
        self.train_subset, self.train_on, self.supervised_share = (
            train_subset,
            train_on,
            supervised_share,
        )
        self.segment, self.val_segment = segment, val_segment
        self.batch_size, self.num_workers, self.limit_val_items = (
            batch_size,
            num_workers,
            limit_val_items,
        )
        self.test_split, self.limit_test_items = test_split, limit_test_items
        self.n_src = len(TASKS[task][1])
        self.metadata = Path(metadata).expanduser() if metadata else None
        self.wham = Path(wham).expanduser() if wham else None
        self.dynamic_mixing, self.seed = dynamic_mixing, seed
        if dynamic_mixing and (
            self.metadata is None or train_on != "sources" or task == "enh_single"
        ):
            raise ValueError(
                "dynamic_mixing draws two-speaker mixtures from LibriSpeech utterances: it needs "
                "data.init_args.metadata (LibriMix's metadata, root = LibriSpeech), "
                "train_on: sources and a two-speaker task"
            )
        self.audio_channels = 1
        self.dataset_name = "Libri2Mix"

    def _ds(self, subset: str, segment: float | None, random_segments: bool) -> Dataset:
        if self.metadata is None:
            return Libri2MixDataset(
                self.root, subset, self.task, self.sample_rate, self.mode, segment,
                random_segments,
            )  # fmt: skip
        return LibriMixOnTheFly(
            self._metadata(subset), self.task, self.sample_rate, self.mode, segment,
            random_segments,
        )  # fmt: skip

    def _metadata(self, subset: str) -> LibriMixMetadata:
        if not self.root.is_dir() or not any(
            (self.root / d).is_dir() for d in SUBSET_DIRS.values()
        ):
            raise DatasetNotFoundError(
                f"{self.root} is not a LibriSpeech folder (no {', '.join(SUBSET_DIRS.values())}): "
                "with data.init_args.metadata, DATA= (data.init_args.root) names LibriSpeech"
            )
        if self.sample_rate not in (8000, 16000):
            raise ValueError(f"Libri2Mix comes at 8000 or 16000 Hz, not {self.sample_rate}")
        return LibriMixMetadata(metadata_csv(self.metadata, subset), self.root, self.wham)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None):
            base = self._ds(self.train_subset, self.segment, True)
            if self.dynamic_mixing:
                self.train_set = _SupervisedTrain(
                    DynamicMixing(
                        self._metadata(self.train_subset),
                        self.sample_rate,
                        self.mode,
                        self.segment,
                        self.seed,
                    )  # fmt: skip
                )
            elif self.train_on == "mixtures":
                self.train_set = MixtureOfMixtures(base, self.supervised_share)
            else:
                self.train_set = _SupervisedTrain(base)
        if stage in ("fit", "validate", None):
            self.val_set = self._ds("dev", self.val_segment, False)
            if self.limit_val_items is not None:
                self.val_set.rows = self.val_set.rows[: self.limit_val_items]
        if stage in ("test", None):
            self.test_set = self._ds(self.test_split, None, False)
            self.test_set.rows = self.test_set.rows[: self.limit_test_items]
            if not self.test_set.rows:
                where = getattr(self.test_set, "csv_path", None) or self.test_set.md.csv_path
                raise ValueError(f"{where}: no test items (the CSV has no rows)")

    def train_dataloader(self) -> DataLoader:
        if self.dynamic_mixing:  # items are (epoch, index): the draws follow the epoch
            sampler = EpochSampler(self.train_set, self.seed)
            return DataLoader(self.train_set, self.batch_size, sampler=sampler, drop_last=True,
                              num_workers=self.num_workers,
                              persistent_workers=self.num_workers > 0)  # fmt: skip
        return train_loader(self.train_set, self.batch_size, self.num_workers)

    def _eval_loader(self, ds: Dataset, segmented: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size if segmented else 1,
            sampler=EvalSampler(ds),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set, self.val_segment is not None)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set, False)

    def describe(self) -> dict:
        """What the results file records about the data."""
        return {
            "dataset": self.dataset_name,
            "task": self.task,
            "sample_rate": self.sample_rate,
            "mode": self.mode,
            "split": self.test_split,
            "root": str(self.root),
            **(
                {"source": "built from LibriSpeech on the fly", "metadata": str(self.metadata)}
                if self.metadata
                else {}
            ),
            **({"dynamic_mixing": True} if self.dynamic_mixing else {}),
        }
