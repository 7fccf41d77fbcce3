"""Band-split RoPE transformers: BS-RoFormer (Lu, Wang, Kong & Hung 2023, "Music source
separation with band-split RoPE transformer") and Mel-RoFormer (Wang, Lu, Hung, Wang & Kong
2023, "Mel-RoFormer for vocal separation and vocal melody transcription") in one module.

The complex STFT of each channel is cut into frequency bands: fixed, non-overlapping bands
(``bands="split"``: BS-RoFormer) or the overlapping bands of a mel filterbank
(``bands="mel"``: Mel-RoFormer, a frequency in two bands is seen by both). Each band's real and
imaginary parts (all channels) are projected to one ``dim`` vector; a stack of axial blocks then
runs a transformer along time (each band) and one along the bands (each frame), both with
rotary position embeddings and per-head sigmoid gates on the attention output. A per-band
MLP estimates each stem's complex mask (Mel-RoFormer averages the masks of the bands that
share a frequency), applied to the mixture STFT, inverted.

Parameter names and shapes are those of the ``bs-roformer`` package before its hyper-connection
and value-residual options (0.3.x, the layout the community checkpoints use: band_split,
layers.<i>.<0: time | 1: freq>.layers.<j>.<0: attention | 1: feed-forward>, final_norm,
mask_estimators), so those weights load by renaming nothing (:func:`zoo.hub.convert.
from_roformer` checks the configuration and drops the fixed rotary frequencies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone
from .capabilities import Exportable, ExportRefused

__all__ = ["BS_ROFORMER_BANDS", "RoFormer", "bs_roformer_paper", "mel_roformer_paper", "mel_bands"]

# BS-RoFormer's band layout at n_fft 2048 (1025 bins): 24 bands of 2, 12 of 4, 8 of 12, 8 of 24,
# 8 of 48, and 128 + 129 (the paper's ~60 bands, as the bs-roformer package sets them)
BS_ROFORMER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)


class RMSNorm(nn.Module):
    """``x / |x| * sqrt(dim) * gamma`` over the last axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


def rotate(x: Tensor, angles: Tensor) -> Tensor:
    """Rotary position embedding of ``x`` ``(..., n, d)`` by ``angles`` ``(n, d / 2)``: each
    adjacent pair of features ``(2i, 2i + 1)`` rotated by its angle."""
    cos = angles.cos().repeat_interleave(2, -1).to(x.dtype)
    sin = angles.sin().repeat_interleave(2, -1).to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    half = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)  # (-x2, x1) per pair
    return x * cos + half * sin


class GatedAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary embeddings and a sigmoid gate per head.

    Shape: ``(B, n, dim)`` → ``(B, n, dim)``.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(
            nn.Linear(heads * dim_head, dim, bias=False), nn.Dropout(dropout)
        )
        inv = 1.0 / 10000 ** (torch.arange(0, dim_head, 2).float() / dim_head)
        self.register_buffer("inv_freq", inv, persistent=False)  # the rotary frequencies

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        b, n, _ = x.shape
        qkv = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv  # (B, heads, n, dim_head) each
        angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * self.inv_freq
        q, k = rotate(q, angles), rotate(k, angles)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, heads, n, dim_head)
        out = out * self.to_gates(x).transpose(1, 2).sigmoid()[..., None]
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """Pre-norm MLP ``dim → mult·dim → dim`` with GELU."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            RMSNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(dim * mult, dim), nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """``depth`` residual (attention, feed-forward) pairs along the second axis, and an output
    norm (Mel-RoFormer) or none (BS-RoFormer, which normalises once at the end)."""

    def __init__(self, dim, depth, heads, dim_head, dropout=0.0, norm_output=False):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [GatedAttention(dim, heads, dim_head, dropout), FeedForward(dim, dropout=dropout)]
            )  # fmt: skip
            for _ in range(depth)
        )
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class BandSplit(nn.Module):
    """Each band's features (real and imaginary parts of its bins and channels) → ``dim``.

    Shape: ``(B, N, sum(widths))`` → ``(B, N, bands, dim)``.
    """

    def __init__(self, dim: int, widths: tuple[int, ...]):
        super().__init__()
        self.widths = widths
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(w), nn.Linear(w, dim)) for w in widths
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = x.split(self.widths, dim=-1)
        return torch.stack([f(p) for f, p in zip(self.to_features, parts, strict=True)], -2)


class MaskEstimator(nn.Module):
    """One stem's mask: per band an MLP (``depth`` layers, tanh, hidden ``4·dim``) to twice the
    band's width, halved by a GLU. Shape: ``(B, N, bands, dim)`` → ``(B, N, sum(widths))``."""

    def __init__(self, dim: int, widths: tuple[int, ...], depth: int):
        super().__init__()
        dims = (dim, *(4 * dim,) * (depth - 1))

        def mlp(w):
            layers = []
            for i, d in enumerate(dims):
                layers.append(nn.Linear(d, dims[i + 1] if i + 1 < len(dims) else 2 * w))
                if i + 1 < len(dims):
                    layers.append(nn.Tanh())
            return nn.Sequential(nn.Sequential(*layers), nn.GLU(dim=-1))

        self.to_freqs = nn.ModuleList(mlp(w) for w in widths)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([f(band) for f, band in zip(self.to_freqs, x.unbind(-2), strict=True)], -1)


def mel_bands(n_bands: int, n_fft: int, sample_rate: int) -> Tensor:
    """Which STFT bins each mel band covers: ``(bands, n_fft // 2 + 1)`` booleans, the non-zero
    pattern of the Slaney-style mel filterbank (librosa's default, which Mel-RoFormer uses),
    with the first and last bins forced in (the first and last bands)."""
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(
        n_fft // 2 + 1,
        0.0,
        sample_rate / 2,
        n_bands,
        sample_rate,
        norm="slaney",
        mel_scale="slaney",
    ).T  # (bands, bins)
    fb[0, 0] = fb[-1, -1] = 1.0
    return fb > 0


class RoFormer(Backbone, Exportable):
    """BS-RoFormer (``bands="split"``) or Mel-RoFormer (``bands="mel"``).

    Args:
        sources: the stems, one mask estimator each <vocals, drums, bass, other>.
        sample_rate: <44100>.
        bands: ``split`` (fixed bands: ``band_widths``) or ``mel`` (``n_bands`` mel bands).
        band_widths: bins per band (``split``), summing to ``n_fft // 2 + 1`` <the paper's 62>.
        n_bands: mel bands (``mel``) <60>.
        dim: feature width <D=384>; depth: axial blocks <L=6 (12 in the largest model)>.
        time_depth, freq_depth: transformer layers per block along time / bands <1>.
        heads: <8>; dim_head: <64>.
        n_fft: <2048>; hop: <441 (10 ms)>; win_length: <2048>.
        mask_depth: layers of the mask MLPs <2 (BS), 1 in the package's Mel-RoFormer>.
        norm_output: each transformer ends with a norm (the package's Mel-RoFormer) instead of
            one norm after the blocks (BS-RoFormer).
        audio_channels: <2 (stereo)>.
        dropout: attention and feed-forward dropout <0>.

    Shape:
        ``(B, C, T)`` → ``(B, S, C, T)``.
    """

    exporters = ("dynamo",)

    def __init__(
        self,
        sources: list[str] = ("vocals", "drums", "bass", "other"),
        sample_rate: int = 44100,
        bands: str = "split",
        band_widths: tuple[int, ...] = BS_ROFORMER_BANDS,
        n_bands: int = 60,
        dim: int = 384,
        depth: int = 6,
        time_depth: int = 1,
        freq_depth: int = 1,
        heads: int = 8,
        dim_head: int = 64,
        n_fft: int = 2048,
        hop: int = 441,
        win_length: int = 2048,
        mask_depth: int = 2,
        norm_output: bool = False,
        audio_channels: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if bands not in ("split", "mel"):
            raise ValueError(f"bands must be 'split' or 'mel', got {bands!r}")
        n_bins = n_fft // 2 + 1
        self.sources, self.n_src = list(sources), len(sources)
        self.sample_rate, self.audio_channels = sample_rate, audio_channels
        self.bands, self.n_fft, self.hop, self.win_length = bands, n_fft, hop, win_length
        c = audio_channels
        if bands == "split":
            if sum(band_widths) != n_bins:
                raise ValueError(
                    f"band_widths sum to {sum(band_widths)} bins, n_fft {n_fft} gives {n_bins}"
                )
            widths = tuple(2 * w * c for w in band_widths)
        else:
            cover = mel_bands(n_bands, n_fft, sample_rate)  # (bands, bins)
            if not cover.any(0).all():
                raise ValueError(f"{n_bands} mel bands at n_fft {n_fft} leave bins uncovered")
            bins = torch.arange(n_bins).expand(n_bands, -1)[cover]  # band after band
            index = (bins[:, None] * c + torch.arange(c)).flatten()  # (bin, channel) rows
            self.register_buffer("freq_index", index, persistent=False)
            counts = cover.sum(0).repeat_interleave(c).float()  # bands per (bin, channel)
            self.register_buffer("bands_per_freq", counts, persistent=False)
            widths = tuple(2 * int(w) * c for w in cover.sum(1))
        self.band_split = BandSplit(dim, widths)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Transformer(dim, time_depth, heads, dim_head, dropout, norm_output),
                    Transformer(dim, freq_depth, heads, dim_head, dropout, norm_output),
                ]
            )  # fmt: skip
            for _ in range(depth)
        )
        self.final_norm = nn.Identity() if norm_output else RMSNorm(dim)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, widths, mask_depth) for _ in sources
        )
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    @property
    def architecture(self) -> str:
        return "BS-RoFormer" if self.bands == "split" else "Mel-RoFormer"

    def export_form(self) -> list[str]:
        raise ExportRefused(
            f"{self.architecture} does not export yet: its masks are complex products of the "
            "complex STFT, which ONNX does not carry (a real-valued path is not built)"
        )

    def forward(self, mix: Tensor) -> Tensor:
        b, c, t = mix.shape
        if c != self.audio_channels:
            raise ValueError(
                f"{self.architecture} takes (batch, {self.audio_channels} channels, time), got "
                f"{tuple(mix.shape)}"
            )
        spec = torch.stft(mix.reshape(b * c, t), self.n_fft, self.hop, self.win_length,
                          self.window, return_complex=True)  # (B*C, F, N)  # fmt: skip
        f, n = spec.shape[-2:]
        spec = spec.view(b, c, f, n).transpose(1, 2).reshape(b, f * c, n)  # bin-major rows
        x = spec if self.bands == "split" else spec[:, self.freq_index]  # (B, F', N)
        x = torch.view_as_real(x).transpose(1, 2).reshape(b, n, -1)  # (B, N, F'*2)
        x = self.band_split(x)  # (B, N, bands, D)
        k = x.shape[2]
        for along_time, along_bands in self.layers:
            x = x.transpose(1, 2).reshape(b * k, n, -1)  # each band along time
            x = along_time(x).view(b, k, n, -1).transpose(1, 2).reshape(b * n, k, -1)
            x = along_bands(x).view(b, n, k, -1)  # each frame along the bands
        x = self.final_norm(x)
        masks = torch.stack([est(x) for est in self.mask_estimators], 1)  # (B, S, N, F'*2)
        masks = torch.view_as_complex(masks.unflatten(-1, (-1, 2)).transpose(2, 3).contiguous())
        masks = masks.to(spec.dtype)  # (B, S, F', N)
        if self.bands == "mel":  # the bands that share a bin: their masks averaged
            total = masks.new_zeros(b, self.n_src, f * c, n)
            total.index_add_(2, self.freq_index, masks)
            masks = total / self.bands_per_freq.clamp_min(1e-8)[:, None]
        est = (spec[:, None] * masks).view(b, self.n_src, f, c, n).transpose(2, 3)
        wav = torch.istft(est.reshape(-1, f, n), self.n_fft, self.hop, self.win_length,
                          self.window, length=t)  # fmt: skip
        return wav.view(b, self.n_src, c, t)


def bs_roformer_paper(sources=("vocals", "drums", "bass", "other")) -> RoFormer:
    """The BS-RoFormer of the paper's MUSDB18-HQ-only row (L=6, D=384, 8 x 64 heads)."""
    return RoFormer(list(sources), bands="split", dim=384, depth=6)


def mel_roformer_paper(sources=("vocals", "drums", "bass", "other")) -> RoFormer:
    """Mel-RoFormer with 60 mel bands at the same size (L=6, D=384, 8 x 64 heads)."""
    return RoFormer(list(sources), bands="mel", n_bands=60, dim=384, depth=6, norm_output=True)
