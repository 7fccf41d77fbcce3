"""``zoo prepare``: the built-in mini datasets, written in the real on-disk formats (each
datamodule declares its own: :attr:`zoo.data.base.SeparationData.mini`)."""

from __future__ import annotations

import time
from pathlib import Path

from .paths import data_dir

__all__ = ["mini_root", "prepare"]


def _known(name: str):
    from ..data import mini_datasets

    known = mini_datasets()
    if name not in known:
        raise ValueError(f"unknown mini dataset {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def mini_root(name: str) -> Path:
    """Where the mini dataset ``name`` lives by default."""
    return data_dir() / _known(name).folder


def prepare(dataset: str, root: str | None = None, force: bool = False) -> Path:
    """Write a built-in mini dataset in the real on-disk format (a complete one with the same
    spec is reused).

    Args:
        dataset: ``libri2mix-mini`` (Libri2Mix layout: folders, PCM16 WAVs, metadata CSVs) or
            ``musdb18-mini`` (MUSDB18-HQ layout: one folder of stems per track).
        root: where to write it (default ``$ZOO_DATA_DIR/mini/...``, or ``data/mini/...`` in a
            checkout).
        force: rebuild even if a complete set is there.
    """
    mini = _known(dataset)
    path = Path(root) if root else data_dir() / mini.folder
    t0 = time.time()
    mini.write(path, force=force)
    print(f"[zoo] {dataset} ready at {path} ({time.time() - t0:.1f} s)", flush=True)
    return path
