"""Separation networks. Every backbone maps ``(B, C, T)`` waveforms to ``(B, S, C, T)`` estimates."""

from .convtasnet import ConvTasNet, conv_tasnet_paper, tdcnpp_mixit

__all__ = ["ConvTasNet", "conv_tasnet_paper", "tdcnpp_mixit"]
