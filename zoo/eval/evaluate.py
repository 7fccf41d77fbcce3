"""``zoo evaluate``: score any loadable separator with the recipes' metrics and results files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["evaluate", "macs_per_second", "score_on_libri2mix"]


def macs_per_second(backbone: nn.Module, channels: int = 1) -> int | None:
    """Multiply-accumulates to separate one second of audio (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    rate = getattr(backbone, "sample_rate", None)
    if not rate:
        return None
    x = torch.zeros(1, channels, int(rate), device=next(backbone.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backbone(x)
    return int(counter.get_total_flops() // 2)


def score_on_libri2mix(
    backbone: nn.Module,
    data: str | Path,
    out_dir: str | Path,
    task: str = "sep_clean",
    split: str = "test",
    mode: str = "min",
    limit: int | None = None,
    extra: dict | None = None,
) -> dict:
    """Test ``backbone`` on a Libri2Mix split exactly as a recipe's test, with SDRi, and write
    ``<out_dir>/metrics.json`` + ``test_items.csv`` (mini data labelled as such)."""
    import lightning as L

    from ..data.libri2mix import Libri2MixDataModule, Libri2MixDataset
    from ..losses import PITLoss
    from ..system import SeparationSystem
    from .results import ResultsWriter

    rate = backbone.sample_rate
    dm = Libri2MixDataModule(str(data), task=task, sample_rate=rate, mode=mode)
    dm.setup("test")
    if split != "test":
        dm.test_set = Libri2MixDataset(data, split, task, rate, mode)
    if limit:
        dm.test_set.rows = dm.test_set.rows[:limit]
    writer = ResultsWriter(str(out_dir), extra={"split": split, **(extra or {})})
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(
        SeparationSystem(backbone, PITLoss(), report_sdr=True), datamodule=dm, verbose=False
    )
    return writer.last or {}


def evaluate(
    model: str,
    data: str | Path,
    out_dir: str | Path,
    task: str = "sep_clean",
    split: str = "test",
    mode: str = "min",
    download: bool = False,
    limit: int | None = None,
) -> dict:
    """Test a separator on Libri2Mix ``split`` and write ``metrics.json`` + ``test_items.csv``.

    The model is scored exactly as a recipe's test (PIT-matched SI-SDR / SI-SDRi through
    torchmetrics, plus SDRi), at its own sample rate (``wav8k`` or ``wav16k`` is chosen from it).
    """
    import zoo

    sep = zoo.load(model, download=download)
    name = Path(str(model)).name if Path(str(model)).exists() else str(model)
    return score_on_libri2mix(
        sep.backbone,
        data,
        out_dir,
        task,
        split,
        mode,
        limit,
        extra={"model": name, "macs_per_second": macs_per_second(sep.backbone)},
    )
