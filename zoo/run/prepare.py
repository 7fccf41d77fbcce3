"""``zoo prepare``: the built-in mini datasets, written in the real on-disk formats."""

from __future__ import annotations

import time
from pathlib import Path

from .paths import data_dir

__all__ = ["MINI_DATASETS", "mini_root", "prepare"]

# name -> folder under data_dir()
MINI_DATASETS = {"libri2mix-mini": "mini/Libri2Mix", "musdb18-mini": "mini/MUSDB18-HQ"}


def mini_root(name: str) -> Path:
    """Where the mini dataset ``name`` lives by default."""
    if name not in MINI_DATASETS:
        raise ValueError(
            f"unknown mini dataset {name!r}; known: {', '.join(sorted(MINI_DATASETS))}"
        )
    return data_dir() / MINI_DATASETS[name]


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
    path = Path(root) if root else mini_root(dataset)
    t0 = time.time()
    if dataset == "libri2mix-mini":
        from ..data.mini import prepare_libri2mix_mini

        prepare_libri2mix_mini(path, force=force)
    elif dataset == "musdb18-mini":
        from ..data.musdb_mini import prepare_musdb18_mini

        prepare_musdb18_mini(path, force=force)
    else:
        mini_root(dataset)  # raises with the list of known datasets
    print(f"[zoo] {dataset} ready at {path} ({time.time() - t0:.1f} s)", flush=True)
    return path
