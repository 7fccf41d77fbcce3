"""Separation networks: every backbone maps ``(B, C, T)`` waveforms to ``(B, S, C, T)``."""

from .convtasnet import ConvTasNet, conv_tasnet_paper, tdcnpp_mixit

__all__ = ["ConvTasNet", "conv_tasnet_paper", "tdcnpp_mixit"]
