"""Losses: pairwise signal losses and the assignment objectives that share them."""

from .mixit import MixITLoss
from .pit import FixedOrderLoss, HungarianLoss, PITLoss, best_matching
from .semisup import SemiSupervisedLoss
from .signal import (
    NegSISDR,
    PairwiseL1,
    PairwiseLoss,
    PairwiseMSE,
    PairwiseSpectralL1,
    PairwiseSpectralMSE,
    ThresholdedSNR,
)

__all__ = [
    "PairwiseLoss",
    "NegSISDR",
    "ThresholdedSNR",
    "PairwiseMSE",
    "PairwiseL1",
    "PairwiseSpectralL1",
    "PairwiseSpectralMSE",
    "PITLoss",
    "FixedOrderLoss",
    "HungarianLoss",
    "MixITLoss",
    "SemiSupervisedLoss",
    "best_matching",
]
