"""``zoo evaluate``: score any loadable separator with the recipes' metrics and results files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["evaluate", "is_musdb_root", "macs_per_second", "score_on_libri2mix", "score_on_musdb"]


def macs_per_second(backbone: nn.Module, channels: int = 1) -> int | None:
    """Multiply-accumulates to separate one second of audio (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    rate = getattr(backbone, "sample_rate", None)
    if not rate:
        return None
    channels = getattr(backbone, "audio_channels", None) or channels
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
    _test_trainer(writer).test(
        SeparationSystem(backbone, PITLoss(), report_sdr=True), datamodule=dm, verbose=False
    )
    return writer.last or {}


def is_musdb_root(data: str | Path) -> bool:
    """A MUSDB18(-HQ) root (``train/`` or ``test/`` folders), not a Libri2Mix one."""
    data = Path(data)
    has_subsets = (data / "test").is_dir() or (data / "train").is_dir()
    return has_subsets and not any(data.glob("wav*k"))


def _test_trainer(writer):
    import lightning as L

    return L.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def score_on_musdb(
    backbone: nn.Module,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    chunk_seconds: float | None = None,
    extra: dict | None = None,
) -> dict:
    """Test ``backbone`` (named outputs: MUSDB18 targets) on MUSDB18(-HQ) whole tracks with
    museval's BSS Eval v4 per target, as the music recipes' test does; ``split`` is ``test`` or
    ``valid``. The data are resampled to the model's rate; ``chunk_seconds`` separates songs in
    overlap-added chunks (bounded memory)."""
    from ..data.musdb18 import TARGETS, MUSDB18DataModule
    from ..data.musdb_mini import SETUP_FILE
    from ..losses import FixedOrderLoss
    from ..system import SeparationSystem
    from .results import ResultsWriter

    data = Path(data)
    targets = list(getattr(backbone, "sources", None) or [])
    if not targets or any(t not in TARGETS for t in targets):
        raise ValueError(
            f"the model's outputs {targets} are not MUSDB18 targets ({list(TARGETS)}); "
            "only such models can be scored on MUSDB18"
        )
    is_wav = not any(data.glob("*/*.stem.mp4"))
    setup = SETUP_FILE if (data / SETUP_FILE).is_file() else None
    rate = int(backbone.sample_rate)
    dm = MUSDB18DataModule(
        str(data),
        is_wav,
        targets,
        setup,
        None if rate == 44100 else rate,
        test_split=split,
        limit_test_tracks=limit,
    )
    writer = ResultsWriter(str(out_dir), extra={"split": split, **(extra or {})})
    system = SeparationSystem(
        backbone, FixedOrderLoss(), match="fixed", bss_eval=True, eval_chunk_seconds=chunk_seconds
    )
    _test_trainer(writer).test(system, datamodule=dm, verbose=False)
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
    chunk_seconds: float | None = None,
) -> dict:
    """Test a separator and write ``metrics.json`` + ``test_items.csv``.

    Libri2Mix (``data`` holds ``wav8k``/``wav16k``): scored exactly as a speech recipe's test
    (PIT-matched SI-SDR / SI-SDRi through torchmetrics, plus SDRi) at the model's own rate.
    MUSDB18(-HQ) (``data`` holds ``train``/``test``): museval's BSS Eval v4 SDR/ISR/SIR/SAR per
    target on whole songs, as a music recipe's test.
    """
    import zoo

    sep = zoo.load(model, download=download)
    name = Path(str(model)).name if Path(str(model)).exists() else str(model)
    extra = {"model": name, "macs_per_second": macs_per_second(sep.backbone)}
    if is_musdb_root(data):
        return score_on_musdb(sep.backbone, data, out_dir, split, limit, chunk_seconds, extra)
    return score_on_libri2mix(sep.backbone, data, out_dir, task, split, mode, limit, extra)
