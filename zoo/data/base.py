"""What every datamodule tells the system about its data (the counterpart of the backbone
contract in :mod:`zoo.backbones.base`).

A :class:`SeparationData` provides ``sample_rate`` (Hz, what the items are read or resampled
at), ``audio_channels`` (and ``train_channels`` when training items have another count: Meta-
TasNet's mono training on stereo music), ``n_src`` (references per test item),
``source_names`` (names of the references when they are named targets, in order: music;
``None`` for anonymous speakers), ``test_split`` / ``limit_test_items`` (what ``trainer.test``
scores) and :meth:`describe` (what the results file records). Items are dicts with ``mix``
``(C, T)``, ``ref`` (training targets), ``sources`` ``(n_src, C, T)`` (evaluation) and ``id``.
"""

from __future__ import annotations

import lightning as L

__all__ = ["SeparationData"]


class SeparationData(L.LightningDataModule):
    """Base class of the zoo's datamodules."""

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
