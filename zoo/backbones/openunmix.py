"""Open-Unmix (Stöter, Uhlich, Liutkus & Mitsufuji 2019): the per-target spectrogram network.

Parameter names and shapes are those of the ``openunmix`` package, so its published per-target
weights load with ``strict=True``; the normalisation statistics are stored as parameters
(``input_mean`` holds the negated mean and ``input_scale`` the inverse scale, as there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OpenUnmixTarget", "bandwidth_to_max_bin", "umxhq_target"]


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins up to ``bandwidth`` Hz (inclusive), as Open-Unmix counts them."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    return int(torch.max(torch.where(freqs <= bandwidth)[0])) + 1


class OpenUnmixTarget(nn.Module):
    """One target's network on magnitude spectrograms: fc → BiLSTM → fc with skip → mask.

    Args:
        nb_bins: STFT bins ``n_fft // 2 + 1`` (2049 for umxhq's n_fft 4096).
        nb_channels: audio channels (2).
        hidden_size: bottleneck width (512); each LSTM direction has half of it.
        nb_layers: LSTM layers (3).
        unidirectional: causal variant (one direction of full width).
        max_bin: bins the network sees (bandwidth limit: 1487 = 16 kHz at 44.1 kHz / 4096).

    Shape:
        ``(B, C, nb_bins, frames)`` magnitudes → ``(B, C, nb_bins, frames)`` target magnitudes.
    """

    def __init__(
        self,
        nb_bins: int = 2049,
        nb_channels: int = 2,
        hidden_size: int = 512,
        nb_layers: int = 3,
        unidirectional: bool = False,
        max_bin: int | None = None,
    ):
        super().__init__()
        self.nb_output_bins = nb_bins
        self.nb_bins = max_bin or nb_bins
        self.hidden_size = hidden_size
        self.fc1 = nn.Linear(self.nb_bins * nb_channels, hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.lstm = nn.LSTM(
            input_size=hidden_size,
            hidden_size=hidden_size if unidirectional else hidden_size // 2,
            num_layers=nb_layers,
            bidirectional=not unidirectional,
            dropout=0.4 if nb_layers > 1 else 0.0,
        )
        self.fc2 = nn.Linear(hidden_size * 2, hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_size)
        self.fc3 = nn.Linear(hidden_size, nb_bins * nb_channels, bias=False)
        self.bn3 = nn.BatchNorm1d(nb_bins * nb_channels)
        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))  # -mean of the training data
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))  # 1 / std of the training data
        self.output_scale = nn.Parameter(torch.ones(nb_bins))
        self.output_mean = nn.Parameter(torch.ones(nb_bins))

    def forward(self, spec: Tensor) -> Tensor:
        x = spec.permute(3, 0, 1, 2)  # (frames, B, C, F)
        frames, b, c, _ = x.shape
        mix = x.detach()  # the mask multiplies the (constant) mixture magnitude
        x = (x[..., : self.nb_bins] + self.input_mean) * self.input_scale
        x = self.bn1(self.fc1(x.reshape(-1, c * self.nb_bins)))  # (frames*B, H)
        x = torch.tanh(x.reshape(frames, b, self.hidden_size))
        x = torch.cat([x, self.lstm(x)[0]], -1)  # skip around the LSTM: (frames, B, 2H)
        x = F.relu(self.bn2(self.fc2(x.reshape(-1, x.shape[-1]))))
        x = self.bn3(self.fc3(x)).reshape(frames, b, c, self.nb_output_bins)
        x = F.relu(x * self.output_scale + self.output_mean) * mix
        return x.permute(1, 2, 3, 0)  # (B, C, F, frames)


def umxhq_target() -> OpenUnmixTarget:
    """The published umxhq configuration of one target (n_fft 4096, 16 kHz bandwidth)."""
    return OpenUnmixTarget(2049, 2, 512, 3, False, bandwidth_to_max_bin(44100, 4096, 16000))
