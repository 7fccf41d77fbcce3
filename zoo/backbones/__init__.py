"""Separation networks: every backbone implements :class:`Backbone` (``base.py``, the written
contract) and maps ``(B, C, T)`` waveforms to ``(B, S, C, T)``."""

from .audioslots import AudioSlots, AudioSlotsAutoencoder
from .base import Backbone, ContractError
from .convtasnet import ConvTasNet, conv_tasnet_paper, tdcnpp_mixit
from .htdemucs import HTDemucs, htdemucs_paper
from .metatasnet import MetaTasNet
from .openunmix import OpenUnmix, OpenUnmixTarget
from .oracle import OracleMask
from .roformer import RoFormer, bs_roformer_paper, mel_roformer_paper
from .unet import SpectrogramUNet

__all__ = [
    "AudioSlots",
    "AudioSlotsAutoencoder",
    "Backbone",
    "ContractError",
    "ConvTasNet",
    "HTDemucs",
    "MetaTasNet",
    "OpenUnmix",
    "OpenUnmixTarget",
    "OracleMask",
    "RoFormer",
    "SpectrogramUNet",
    "bs_roformer_paper",
    "conv_tasnet_paper",
    "htdemucs_paper",
    "mel_roformer_paper",
    "tdcnpp_mixit",
]
