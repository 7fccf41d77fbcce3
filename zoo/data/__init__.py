"""Datamodules and the mini-dataset generators that write the real on-disk formats.

:data:`DATAMODULES` lists the zoo's datamodules; what the run layer needs to know about each
(its mini dataset, its result names, its headline metric) is declared on the class
(:mod:`zoo.data.base`)."""

from .base import MiniDataset, SeparationData
from .libri2mix import Libri2MixDataModule
from .musdb18 import MUSDB18DataModule

__all__ = [
    "DATAMODULES",
    "Libri2MixDataModule",
    "MUSDB18DataModule",
    "MiniDataset",
    "SeparationData",
    "headline_metric",
    "mini_datasets",
    "prepare_tools",
]

DATAMODULES: tuple[type[SeparationData], ...] = (Libri2MixDataModule, MUSDB18DataModule)


def mini_datasets() -> dict[str, MiniDataset]:
    """The built-in mini datasets by ``zoo prepare`` name."""
    return {dm.mini.name: dm.mini for dm in DATAMODULES if dm.mini is not None}


def prepare_tools() -> dict:
    """``zoo prepare`` steps for the real corpora, by name, as the datamodules declare them."""
    return {name: tool for dm in DATAMODULES for name, tool in dm.tools.items()}


def headline_metric(dataset: str) -> tuple[str, str]:
    """The key and label a results table of ``dataset`` is ranked by (SI-SDRi when no
    datamodule claims that dataset name)."""
    for dm in DATAMODULES:
        if dataset in dm.datasets:
            return dm.headline_metric
    return SeparationData.headline_metric
