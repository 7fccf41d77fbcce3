"""Blocks shared by the backbones."""

from .norms import make_norm
from .stft import BinMoments, stft
from .tcn import TCN

__all__ = ["BinMoments", "TCN", "make_norm", "stft"]
