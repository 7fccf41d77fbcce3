"""Spectrogram U-Net (Jansson et al. 2017, "Singing voice separation with deep U-Net
convolutional networks") as a waveform backbone: the STFT and its inverse happen inside."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Backbone
from .capabilities import Exportable, RealSTFTPath

__all__ = ["SpectrogramUNet"]


class SpectrogramUNet(Backbone, Exportable, RealSTFTPath):
    """Magnitude-STFT U-Net: six strided 5x5 conv encoder layers (batch norm, leaky ReLU 0.2), six
    5x5 transposed-conv decoder layers with skip connections (batch norm, ReLU, 50 % dropout on the
    first three), a sigmoid mask per target applied to the mixture magnitude, mixture phase for the
    inverse STFT.

    Args:
        n_src: number of targets (one mask each).
        sample_rate: model rate (the paper resamples to 8192 Hz).
        n_fft: STFT window <1024 in the paper>; the top bin is dropped so that 512 bins remain.
        hop: STFT hop <768 in the paper>.
        channels: encoder widths <16, 32, 64, 128, 256, 512>.
        kernel_size: conv kernel <5>.
        dropout: decoder dropout on the first three layers <0.5>.
        sources: target names (music: ordered, matched fixed); ``None``: anonymous outputs
            (speech), matched by PIT.

    Shape:
        ``(B, C, T)`` → ``(B, n_src, C, T)`` (channels are processed independently).
    """

    architecture = "U-Net"

    def __init__(
        self,
        n_src: int = 1,
        sample_rate: int = 8192,
        n_fft: int = 1024,
        hop: int = 768,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
        kernel_size: int = 5,
        dropout: float = 0.5,
        sources: list[str] | None = None,
    ):
        super().__init__()
        if sources is not None and len(sources) != n_src:
            raise ValueError(f"sources {sources} must name all n_src={n_src} outputs")
        self.n_src, self.sample_rate, self.n_fft, self.hop = n_src, sample_rate, n_fft, hop
        self.sources = list(sources) if sources else None
        self.depth = len(channels)
        pad = kernel_size // 2
        self.encoder = nn.ModuleList()
        prev = 1
        for ch in channels:
            self.encoder.append(
                nn.Sequential(
                    nn.Conv2d(prev, ch, kernel_size, stride=2, padding=pad),
                    nn.BatchNorm2d(ch),
                    nn.LeakyReLU(0.2),
                )
            )
            prev = ch
        self.decoder = nn.ModuleList()
        outs = [*reversed(channels[:-1]), n_src]
        for i, ch in enumerate(outs):
            in_ch = prev if i == 0 else prev * 2  # skip connection concatenated
            last = i == len(outs) - 1
            layers = [
                nn.ConvTranspose2d(in_ch, ch, kernel_size, stride=2, padding=pad, output_padding=1)
            ]
            if not last:
                layers += [nn.BatchNorm2d(ch), nn.ReLU()]
                if i < 3:
                    layers.append(nn.Dropout(dropout))
            self.decoder.append(nn.Sequential(*layers))
            prev = ch
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.real_stft = None  # use_real_stft(): the exported graphs' path (capabilities.py)

    def masks(self, mag: Tensor) -> Tensor:
        """``(N, 1, F, frames)`` magnitudes (F and frames multiples of 2^depth) → sigmoid masks
        ``(N, n_src, F, frames)``."""
        skips = []
        x = mag
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck feeds the first decoder layer directly
        for i, layer in enumerate(self.decoder):
            if i > 0:
                x = torch.cat([x, skips.pop()], 1)
            x = layer(x)
        return torch.sigmoid(x)

    def forward(self, mix: Tensor) -> Tensor:
        if mix.ndim != 3:
            raise ValueError(
                f"SpectrogramUNet expects (batch, channels, time), got {tuple(mix.shape)}"
            )
        b, c, t = mix.shape
        x = mix.reshape(b * c, t)
        if self.real_stft is None:
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
            mag = spec.abs()
        else:  # exported graphs: real and imaginary parts as two real tensors
            real, imag = self.real_stft.stft(x)
            mag = (real.square() + imag.square()).sqrt()
        f, frames = mag.shape[-2:]
        unit = 2**self.depth
        n_bins = (f - 1) // unit * unit  # 513 -> 512: the top bin is left out (and zeroed)
        n_frames = (frames + unit - 1) // unit * unit
        mag = nn.functional.pad(mag[:, None, :n_bins], (0, n_frames - frames))  # (N, 1, F', fr)
        m = self.masks(mag)[..., :frames]  # (N, S, F', frames)
        m = nn.functional.pad(m, (0, 0, 0, f - n_bins))  # bins above the U-Net get mask 0
        if self.real_stft is None:
            masked = (spec[:, None] * m).reshape(-1, f, frames)
            est = torch.istft(masked, self.n_fft, self.hop, window=self.window, length=t)
        else:
            re, im = (part[:, None] * m for part in (real, imag))
            est = self.real_stft.istft(re.reshape(-1, f, frames), im.reshape(-1, f, frames), t)
        return est.reshape(b, c, self.n_src, t).transpose(1, 2)  # (B, S, C, T)
