"""Blocks shared by the backbones."""

from .norms import make_norm
from .tcn import TCN

__all__ = ["TCN", "make_norm"]
