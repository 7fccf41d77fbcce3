"""STFT over any leading dimensions (torch.stft takes one batch dimension only)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["stft"]


def stft(x: Tensor, n_fft: int, hop: int, window: Tensor) -> Tensor:
    """Centred complex STFT (reflect padding, as ``torch.stft``'s default).

    Shape:
        ``(..., T)`` → ``(..., n_fft // 2 + 1, frames)`` complex.
    """
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, n_fft, hop, window=window, return_complex=True)
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])
