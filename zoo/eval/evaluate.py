"""``zoo evaluate``: score any loadable separator with the recipes' metrics and results files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["evaluate", "macs_per_second", "single_thread"]


@contextlib.contextmanager
def single_thread():
    """Run linear solves with one thread: batched ``torch.linalg.solve`` on matrices of ~150x150
    and up returns wrong values with 2+ threads on some CPUs (an open PyTorch bug), and BSS Eval
    SDR solves 512x512 systems."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


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
    import lightning as L

    import zoo

    from ..data.libri2mix import Libri2MixDataModule, Libri2MixDataset
    from ..data.mini import MARKER
    from ..losses import PITLoss
    from ..system import SeparationSystem
    from .results import ResultsWriter

    sep = zoo.load(model, download=download)
    root = Path(data)
    dm = Libri2MixDataModule(str(root), task=task, sample_rate=sep.sample_rate, mode=mode)
    dm.setup("test")
    if split != "test":
        dm.test_set = Libri2MixDataset(root, split, task, sep.sample_rate, mode)
    if limit:
        dm.test_set.rows = dm.test_set.rows[:limit]
    system = SeparationSystem(sep.backbone, PITLoss(), report_sdr=True)
    mini = (root / MARKER).is_file()
    writer = ResultsWriter(
        str(out_dir),
        recipe=None,
        mini=mini,
        extra={
            "model": Path(str(model)).name if Path(str(model)).exists() else str(model),
            "split": split,
            "macs_per_second": macs_per_second(sep.backbone),
            "data_source": "built-in mini dataset (synthetic)" if mini else str(root),
        },
    )
    trainer = L.Trainer(
        accelerator="auto", devices=1, logger=False, callbacks=[writer], enable_checkpointing=False
    )
    trainer.test(system, datamodule=dm)
    return writer.last or {}
