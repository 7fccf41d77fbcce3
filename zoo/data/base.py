"""What every datamodule tells the system about its data (the counterpart of the backbone
contract in :mod:`zoo.backbones.base`).

A :class:`SeparationData` provides ``sample_rate`` (Hz, what the items are read or resampled
at), ``audio_channels`` (and ``train_channels`` when training items have another count: Meta-
TasNet's mono training on stereo music), ``n_src`` (references per test item),
``source_names`` (names of the references when they are named targets, in order: music;
``None`` for anonymous speakers), ``test_split`` / ``limit_test_items`` (what ``trainer.test``
scores) and :meth:`describe` (what the results file records). Items are dicts with ``mix``
``(C, T)``, ``ref`` (training targets), ``sources`` ``(n_src, C, T)`` (evaluation) and ``id``.

Each datamodule class also declares, as class attributes, what the run layer needs to know about
it without a table of its own: ``mini`` (its built-in mini dataset: the ``zoo prepare`` name,
the folder under the data directory, the generator that writes it in the real format; recipes
on this class run on it when no ``--data`` is given), ``tools`` (``zoo prepare <name>`` steps
for the real corpus: writing, fetching or checking it), ``datasets`` (the ``dataset`` names its
results carry) and ``headline_metric`` (the key the leaderboard ranks its tables by, and its
column label).

Adding a dataset (a checklist; 8 files, none of them in ``zoo/run/``):

1. ``zoo/data/<name>.py``: the datamodule (reads the real on-disk format; errors name the file
   and the fix), with ``mini``, ``datasets`` and ``headline_metric``.
2. ``zoo/data/<name>_mini.py``: the mini generator, writing that same format (marker file and
   :func:`zoo.data.mini.claim_root`, so it never deletes what it did not write).
3. ``zoo/data/__init__.py``: add the class to :data:`zoo.data.DATAMODULES`.
4. ``conf/data/<name>.yaml`` (paper scale) and 5. ``conf/data/<name>_mini.yaml`` (mini).
6. ``recipes/<name>_<method>.yaml``: a recipe composing them.
7. ``tests/unit/data/test_<name>.py``: items, shapes, errors, the mini generator.
8. README: the dataset's section (layout, the command, what the mini set is).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, NamedTuple

import lightning as L

__all__ = ["MiniDataset", "SeparationData"]


class MiniDataset(NamedTuple):
    """A built-in mini dataset in a real on-disk format.

    Attributes:
        name: the ``zoo prepare`` target (``libri2mix-mini``).
        folder: where it is written by default, under the data directory (``mini/Libri2Mix``).
        write: ``write(root, force=False) -> root``: write it (a complete set with the same spec
            is reused; a folder it did not write is refused).
    """

    name: str
    folder: str
    write: Callable[..., Path]


class SeparationData(L.LightningDataModule):
    """Base class of the zoo's datamodules."""

    mini: ClassVar[MiniDataset | None] = None
    tools: ClassVar[dict[str, Callable]] = {}  # `zoo prepare <name>` for the real corpus
    datasets: ClassVar[tuple[str, ...]] = ()
    headline_metric: ClassVar[tuple[str, str]] = ("si_sdri", "SI-SDRi (dB)")

    sample_rate: int
    audio_channels: int
    train_channels: int | None = None  # None: audio_channels
    n_src: int
    source_names: list[str] | None = None
    test_split: str = "test"
    limit_test_items: int | None = None
    root: object = None

    def describe(self) -> dict:
        """``dataset``, ``task``, ``sample_rate``, ``root``... for the results file."""
        raise NotImplementedError
