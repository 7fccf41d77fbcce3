"""Blocks shared by the backbones."""

from .norms import make_norm
from .tcn import TCN, run_block

__all__ = ["TCN", "make_norm", "run_block"]
