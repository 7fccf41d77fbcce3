"""Blocks shared by the backbones."""

from .norms import make_norm
from .stft import stft
from .tcn import TCN

__all__ = ["TCN", "make_norm", "stft"]
