"""Normalisations over ``(B, C, T)`` feature maps, as in Conv-TasNet and TDCN++."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GlobalLayerNorm", "ChannelLayerNorm", "FeatureLayerNorm", "make_norm"]


class _GainBias(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def _normalise(self, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.gamma[:, None] + self.beta[:, None]


class GlobalLayerNorm(_GainBias):
    """gLN (Luo & Mesgarani 2019): statistics over channels and time, per item."""

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        return self._normalise(x, (1, 2))


class ChannelLayerNorm(_GainBias):
    """cLN: statistics over channels, per item and frame (causal-friendly)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._normalise(x, (1,))


class FeatureLayerNorm(_GainBias):
    """fLN, TDCN++'s feature-wise layer norm (Kavalerov et al. 2019): statistics over time, per
    item and channel, so that each feature is normalised on its own."""

    def forward(self, x: Tensor) -> Tensor:
        return self._normalise(x, (2,))


_NORMS = {"gLN": GlobalLayerNorm, "cLN": ChannelLayerNorm, "fLN": FeatureLayerNorm}


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build a norm by name: ``gLN``, ``cLN``, ``fLN``, ``BN`` or ``none``."""
    if kind in _NORMS:
        return _NORMS[kind](channels)
    if kind == "BN":
        return nn.BatchNorm1d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: choose one of {sorted([*_NORMS, 'BN', 'none'])}")
