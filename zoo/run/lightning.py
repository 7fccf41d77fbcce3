"""The LightningCLI the zoo runs: SeparationSystem + any zoo datamodule, the data's sample
rate linked to the backbone's (a recipe states it once)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI

from ..system import SeparationSystem

__all__ = ["ZooCLI", "build"]


class ZooCLI(LightningCLI):
    """LightningCLI over :class:`~zoo.system.SeparationSystem` and any LightningDataModule.

    ``data.init_args.sample_rate`` follows ``model.backbone.sample_rate`` when the classes are
    instantiated; a different rate stated for the data is reported by the run layer
    (:func:`zoo.run.train.check_stated_rate`) and by the system at setup.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(
            SeparationSystem, L.LightningDataModule, *args, subclass_mode_data=True, **kwargs
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments(
            "model.backbone.sample_rate", "data.init_args.sample_rate", apply_on="instantiate"
        )

    def instantiate_trainer(self, **kwargs):
        """The trainer, made resumable: atomic checkpoint writes, random state restored on
        resume, a checkpoint on SIGTERM (:mod:`zoo.run.checkpoints`)."""
        from .checkpoints import AtomicCheckpointIO, ResumableRandomState, SaveOnSigterm

        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks += [ResumableRandomState(), SaveOnSigterm()]
        return trainer


def build(args: list[str]) -> ZooCLI:
    """Parse and instantiate (model, datamodule, trainer) without running anything."""
    return ZooCLI(args=args, run=False)
