"""Learning-rate schedules stepped every optimiser step over a fixed step budget.

:class:`WarmupCosine` is the schedule of the AudioSlots paper (and of most transformer
training): linear warmup from 0, then cosine decay to ``final_scale`` x the base rate at the end
of the budget. The budget defaults to the run's own (``trainer.estimated_stepping_batches``:
``max_steps``, or epochs x batches), which the system fills in, so a recipe states it once, in
the trainer. torch has the pieces (``LinearLR`` + ``CosineAnnealingLR`` in ``SequentialLR``), but
they cannot be written as one LightningCLI ``class_path`` nor told the budget afterwards.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["StepSchedule", "WarmupCosine"]


class StepSchedule(LRScheduler):
    """A schedule stepped every optimiser step; ``total_steps`` ``None`` until the system sets
    it to the run's step budget."""

    total_steps: int | None = None


class WarmupCosine(StepSchedule):
    """Linear warmup over ``warmup_steps``, then cosine decay to ``final_scale`` x the base rate.

    Args:
        optimizer: the optimiser.
        warmup_steps: steps of linear warmup from 0 to the base rate <2500 in AudioSlots>.
        total_steps: the step budget (``None``: the run's, set by the system).
        final_scale: the rate at the end of the budget, relative to the base rate.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        final_scale: float = 0.0,
        last_epoch: int = -1,
    ):
        if warmup_steps < 0 or not 0.0 <= final_scale <= 1.0:
            raise ValueError(
                f"warmup_steps must be >= 0 and final_scale in [0, 1], got {warmup_steps}, "
                f"{final_scale}"
            )
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.final_scale = final_scale
        super().__init__(optimizer, last_epoch)

    def scale(self, step: int) -> float:
        """The factor on the base rate after ``step`` optimiser steps."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.total_steps:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final_scale + (1 - self.final_scale) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.scale(self.last_epoch) for base in self.base_lrs]
