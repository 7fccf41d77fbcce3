"""Semi-supervised MixIT: one batch, supervised items scored on sources, the rest by MixIT."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .mixit import MixITLoss

__all__ = ["SemiSupervisedLoss"]


class SemiSupervisedLoss(nn.Module):
    """Mix a supervised objective and MixIT in one batch (Wisdom et al. 2020, section 4).

    The datamodule marks each item: supervised items carry an ordinary mixture as input and its
    true sources as references; unsupervised items carry a mixture of two mixtures as input and the
    two mixtures as references. Both have the same reference count (two) so they share a batch.

    Args:
        supervised: objective on sources. Default: ``MixITLoss`` with the sources as references,
            as the MixIT paper does with M > n_src outputs (each output is assigned to one
            source); ``PITLoss`` or ``HungarianLoss`` work too.
        unsupervised: objective on mixtures (default ``MixITLoss()``).
        supervised_weight: weight of the supervised term (its share of the batch is set by the
            datamodule's ``supervised_share``).

    Shape:
        - est ``(B, M, *)``, ref ``(B, 2, *)``, supervised ``(B,)`` bool.
    """

    needs_supervision_mask = True

    def __init__(
        self,
        supervised: nn.Module | None = None,
        unsupervised: nn.Module | None = None,
        supervised_weight: float = 1.0,
    ):
        super().__init__()
        self.supervised = supervised if supervised is not None else MixITLoss()
        self.unsupervised = unsupervised if unsupervised is not None else MixITLoss()
        self.supervised_weight = supervised_weight

    def forward(self, est: Tensor, ref: Tensor, supervised: Tensor | None = None):
        if supervised is None:
            raise ValueError("SemiSupervisedLoss needs the batch's 'supervised' mask")
        supervised = supervised.to(torch.bool).reshape(-1)
        if supervised.shape[0] != est.shape[0]:
            raise ValueError(
                f"SemiSupervisedLoss: mask of shape {tuple(supervised.shape)} does not match the "
                f"estimates {tuple(est.shape)}"
            )
        per_item = est.new_zeros(est.shape[0])
        info = {}
        n_sup = int(supervised.sum())
        if n_sup:
            _, sup_info = self.supervised(est[supervised], ref[supervised])
            per_item = per_item.index_put(
                (supervised,), self.supervised_weight * sup_info["per_item"]
            )
        if n_sup < est.shape[0]:
            unsup = ~supervised
            _, unsup_info = self.unsupervised(est[unsup], ref[unsup])
            per_item = per_item.index_put((unsup,), unsup_info["per_item"])
        info["per_item"] = per_item
        info["supervised_share"] = n_sup / est.shape[0]
        return per_item.mean(), info
