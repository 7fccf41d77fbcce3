"""STFT over any leading dimensions (torch.stft takes one batch dimension only)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BinMoments", "stft"]


def stft(x: Tensor, n_fft: int, hop: int, window: Tensor) -> Tensor:
    """Centred complex STFT (reflect padding, as ``torch.stft``'s default).

    Shape:
        ``(..., T)`` → ``(..., n_fft // 2 + 1, frames)`` complex.
    """
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, n_fft, hop, window=window, return_complex=True)
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


class BinMoments:
    """Mean and standard deviation per frequency bin over every frame of many spectrograms,
    accumulated in float64 one batch at a time (data statistics for input normalisation)."""

    def __init__(self):
        self.total = self.total_sq = None
        self.count = 0

    def add(self, spec: Tensor) -> None:
        """``spec``: ``(..., F, frames)``, real."""
        x = spec.double().transpose(-1, -2).reshape(-1, spec.shape[-2])  # (frames, F)
        s, sq = x.sum(0), x.square().sum(0)
        self.total = s if self.total is None else self.total + s
        self.total_sq = sq if self.total_sq is None else self.total_sq + sq
        self.count += x.shape[0]

    def mean_std(self, unbiased: bool = False) -> tuple[Tensor, Tensor]:
        if not self.count:
            raise ValueError("no statistics without data: no mixtures given")
        mean = self.total / self.count
        var = (self.total_sq - self.count * mean.square()).clamp_min(0)
        return mean, (var / max(self.count - unbiased, 1)).sqrt()
