"""``zoo prepare``: the built-in mini datasets, written in the real on-disk formats, and the
steps that make a real corpus ready (each datamodule declares its own: its ``mini`` dataset
and its ``tools``, :mod:`zoo.data.base`)."""

from __future__ import annotations

import inspect
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


def prepare(
    dataset: str,
    root: str | None = None,
    force: bool = False,
    librispeech: str | None = None,
    metadata: str | None = None,
    wham: str | None = None,
    out: str | None = None,
    freqs: list[str] | None = None,
    modes: list[str] | None = None,
    check: bool = False,
):
    """Write a built-in mini dataset in the real on-disk format, or make a real corpus ready.

    ``libri2mix-mini``, ``musdb18-mini``: the mini sets (a complete one with the same spec is
    reused). ``libri2mix``: write the classic Libri2Mix tree from LibriSpeech and LibriMix's
    metadata (``--librispeech --metadata --out [--wham] [--freqs 8k 16k] [--modes min max]``;
    resumable; recipes can instead build it on the fly, README). ``libri2mix-metadata``:
    download LibriMix's metadata CSVs into ``--out``. ``musdb18``: check a MUSDB18 /
    MUSDB18-HQ copy (``--root DIR --check``).

    Args:
        dataset: what to prepare (see above).
        root: where to write a mini set (default ``$ZOO_DATA_DIR/mini/...``, or
            ``data/mini/...`` in a checkout); the MUSDB18 root to check.
        force: rebuild a mini set even if a complete one is there.
        librispeech: the LibriSpeech root (``libri2mix``).
        metadata: LibriMix's ``metadata/Libri2Mix`` folder (``libri2mix``).
        wham: the WHAM! noise root (``libri2mix``: also writes the noisy mixtures).
        out: the output folder (``libri2mix``, ``libri2mix-metadata``).
        freqs: sample rates to write (``8k``, ``16k``; default ``8k``).
        modes: length modes to write (``min``, ``max``; default ``min``).
        check: check the copy at ``root`` (``musdb18``).
    """
    from ..data import mini_datasets, prepare_tools

    minis, tools = mini_datasets(), prepare_tools()
    if dataset in minis:
        mini = minis[dataset]
        path = Path(root) if root else data_dir() / mini.folder
        t0 = time.time()
        mini.write(path, force=force)
        print(f"[zoo] {dataset} ready at {path} ({time.time() - t0:.1f} s)", flush=True)
        return path
    if dataset not in tools:
        known = ", ".join(sorted({*minis, *tools}))
        raise ValueError(f"unknown dataset {dataset!r} for zoo prepare; known: {known}")
    given = {"root": root, "librispeech": librispeech, "metadata": metadata, "wham": wham,
             "out": out, "freqs": tuple(freqs) if freqs else None,
             "modes": tuple(modes) if modes else None}  # fmt: skip
    if dataset == "musdb18" and not check:
        raise ValueError("zoo prepare musdb18 checks a copy you have: --root DIR --check")
    tool = tools[dataset]
    params = inspect.signature(tool).parameters
    args = {k: v for k, v in given.items() if k in params and v is not None}
    needed = [k for k, p in params.items() if p.default is inspect.Parameter.empty]
    missing = [k for k in needed if k not in args]
    if missing:
        raise ValueError(
            f"zoo prepare {dataset} needs {', '.join('--' + k for k in missing)} "
            f"(zoo prepare --help)"
        )
    return tool(**args)
