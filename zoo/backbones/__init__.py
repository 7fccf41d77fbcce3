"""Separation networks: every backbone maps ``(B, C, T)`` waveforms to ``(B, S, C, T)``."""

from .audioslots import AudioSlots
from .convtasnet import ConvTasNet, conv_tasnet_paper, tdcnpp_mixit
from .metatasnet import MetaTasNet
from .openunmix import OpenUnmix, OpenUnmixTarget
from .unet import SpectrogramUNet

__all__ = [
    "AudioSlots",
    "ConvTasNet",
    "MetaTasNet",
    "OpenUnmix",
    "OpenUnmixTarget",
    "SpectrogramUNet",
    "conv_tasnet_paper",
    "tdcnpp_mixit",
]
