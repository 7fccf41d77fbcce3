"""Hybrid Transformer Demucs (Rouard, Massa & Défossez 2023, "Hybrid Transformers for Music
Source Separation"): HTDemucs, the ``demucs`` package's v4 network.

Two U-Nets side by side: one over the STFT (real and imaginary parts of each channel as input
channels, "complex as channels"; its first layers convolve along frequency until one bin is
left), one over the waveform (strided 1-D convolutions). Every encoder layer is a strided
convolution, GELU, a residual branch of dilated convolutions (``DConv``) and a 1x1 GLU
"rewrite" convolution. At the bottom a cross-domain transformer alternates self-attention
within each branch and cross-attention from one branch to the other (sinusoidal positions: 2-D
over (frequency, time) for the spectrogram branch, 1-D for the waveform). The decoders mirror
the encoders with transposed convolutions and skip connections; the spectrogram branch's
output is an STFT per source, inverted and added to the waveform branch's output.

The network works on segments of a fixed length (``segment``, its training length): in
evaluation a shorter input is zero-padded on both sides to that length (as ``demucs.apply.
apply_model`` does) and a longer one is separated in segments overlapping by a quarter and
cross-faded (``zoo.inference.separate_chunked``; Demucs' own ``split=True``).

Parameter names and shapes are those of the ``demucs`` package (``demucs.htdemucs.HTDemucs``:
encoder / decoder / tencoder / tdecoder / freq_emb / crosstransformer), under ``models.<i>.``
for each member of a bag of models (``htdemucs_ft``: one fine-tuned network per stem, combined
by a per-stem weight matrix), so :func:`zoo.hub.convert_demucs.from_demucs` only adds that
prefix, and drops the weights of the waveform transformer layers whose outputs demucs computes
but never uses (see :class:`CrossTransformer`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..inference import separate_chunked
from .base import Backbone
from .capabilities import Exportable, ExportRefused

__all__ = ["HTDemucs", "htdemucs_paper"]


def _norm(on: bool, groups: int, channels: int) -> nn.Module:
    return nn.GroupNorm(groups, channels) if on else nn.Identity()


class LayerScale(nn.Module):
    """A learned per-channel factor on a residual branch (Touvron et al. 2021), channels on
    axis 1 (``(B, C, T)``) or last (``channel_last``: ``(B, T, C)``)."""

    def __init__(self, channels: int, init: float, channel_last: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))
        self.channel_last = channel_last

    def forward(self, x: Tensor) -> Tensor:
        return x * (self.scale if self.channel_last else self.scale[:, None])


class DConv(nn.Module):
    """Residual branches of dilated 1-D convolutions (dilation 1, 2, ...): each compresses the
    channels by ``compress``, GroupNorm, GELU, back up through a GLU, scaled by a LayerScale."""

    def __init__(self, channels: int, compress: float, depth: int, init: float):
        super().__init__()
        hidden = int(channels / compress)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(channels, hidden, 3, dilation=2**d, padding=2**d),
                nn.GroupNorm(1, hidden),
                nn.GELU(),
                nn.Conv1d(hidden, 2 * channels, 1),
                nn.GroupNorm(1, 2 * channels),
                nn.GLU(1),
                LayerScale(channels, init),
            )
            for d in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def _per_bin(dconv: DConv, y: Tensor) -> Tensor:
    """Apply a 1-D branch along time to each frequency row of ``(B, C, F, T)``."""
    b, c, f, t = y.shape
    y = dconv(y.transpose(1, 2).reshape(b * f, c, t))
    return y.view(b, f, c, t).transpose(1, 2)


class EncLayer(nn.Module):
    """Strided convolution (along frequency: ``freq``, or time), norm, GELU, DConv, GLU 1x1.
    ``empty``: the convolution alone (the waveform branch's layer that meets the spectrogram
    branch, whose output is added to it: ``inject``)."""

    def __init__(self, chin, chout, kernel, stride, freq, pad, norm, groups, rewrite, context,
                 dconv, dconv_kw, empty=False):  # fmt: skip
        super().__init__()
        self.freq, self.stride, self.empty = freq, stride, empty
        pad = kernel // 4 if pad else 0
        conv = nn.Conv2d if freq else nn.Conv1d
        if freq:
            kernel, stride, pad = (kernel, 1), (stride, 1), (pad, 0)
        self.conv = conv(chin, chout, kernel, stride, pad)
        if empty:
            return
        self.norm1 = _norm(norm, groups, chout)
        self.rewrite = conv(chout, 2 * chout, 1 + 2 * context, 1, context) if rewrite else None
        if rewrite:
            self.norm2 = _norm(norm, groups, 2 * chout)
        self.dconv = DConv(chout, **dconv_kw) if dconv else None

    def forward(self, x: Tensor, inject: Tensor | None = None) -> Tensor:
        if not self.freq:
            if x.dim() == 4:  # one frequency row left: a time signal
                x = x.flatten(1, 2)
            if x.shape[-1] % self.stride:
                x = F.pad(x, (0, self.stride - x.shape[-1] % self.stride))
        y = self.conv(x)
        if self.empty:
            return y
        if inject is not None:
            y = y + (inject[:, :, None] if inject.dim() == 3 and y.dim() == 4 else inject)
        y = F.gelu(self.norm1(y))
        if self.dconv is not None:
            y = _per_bin(self.dconv, y) if self.freq else self.dconv(y)
        if self.rewrite is not None:
            y = F.glu(self.norm2(self.rewrite(y)), dim=1)
        return y


class DecLayer(nn.Module):
    """Skip connection added, GLU 1x1, DConv, transposed convolution, norm, GELU (not after the
    last layer). Returns the output and the input of the transposed convolution."""

    def __init__(self, chin, chout, kernel, stride, freq, pad, norm, groups, rewrite, context,
                 dconv, dconv_kw, last=False, empty=False):  # fmt: skip
        super().__init__()
        self.freq, self.chin, self.last, self.empty = freq, chin, last, empty
        self.pad = kernel // 4 if pad else 0
        conv, conv_tr = (nn.Conv2d, nn.ConvTranspose2d) if freq else (nn.Conv1d, nn.ConvTranspose1d)
        if freq:
            kernel, stride = (kernel, 1), (stride, 1)
        self.conv_tr = conv_tr(chin, chout, kernel, stride)
        self.norm2 = _norm(norm, groups, chout)
        if empty:
            return
        self.rewrite = conv(chin, 2 * chin, 1 + 2 * context, 1, context) if rewrite else None
        if rewrite:
            self.norm1 = _norm(norm, groups, 2 * chin)
        self.dconv = DConv(chin, **dconv_kw) if dconv else None

    def forward(self, x: Tensor, skip: Tensor | None, length: int) -> tuple[Tensor, Tensor]:
        if self.freq and x.dim() == 3:
            x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
        y = x
        if not self.empty:
            y = x + skip
            if self.rewrite is not None:
                y = F.glu(self.norm1(self.rewrite(y)), dim=1)
            if self.dconv is not None:
                y = _per_bin(self.dconv, y) if self.freq else self.dconv(y)
        z = self.norm2(self.conv_tr(y))
        if self.freq:
            z = z[..., self.pad : z.shape[-2] - self.pad, :] if self.pad else z
        else:
            z = z[..., self.pad : self.pad + length]
        return (z if self.last else F.gelu(z)), y


class _TokenNorm(nn.GroupNorm):
    """GroupNorm with one group over ``(B, T, C)`` tokens: each item normalised over all its
    tokens and channels (the transformer layers' ``norm_out``)."""

    def __init__(self, dim: int):
        super().__init__(1, dim)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class AttentionLayer(nn.Module):
    """Pre-norm transformer layer: self-attention (``cross=False``, module ``self_attn``) or
    attention from ``x`` to the other branch's tokens (``cross``: ``cross_attn``, keys
    normalised by their own ``norm2``), then a feed-forward block, each through a LayerScale,
    and a GroupNorm over the whole sequence at the end (``norm_out``)."""

    def __init__(self, dim, heads, hidden, dropout, gelu, layer_scale, norm_out, cross):
        super().__init__()
        self.cross = cross
        attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        setattr(self, "cross_attn" if cross else "self_attn", attn)
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if cross:
            self.norm3 = nn.LayerNorm(dim)
        self.norm_out = _TokenNorm(dim) if norm_out else None
        scale = (lambda: LayerScale(dim, 1e-4, True)) if layer_scale else nn.Identity
        self.gamma_1, self.gamma_2 = scale(), scale()
        self.dropout, self.dropout1, self.dropout2 = (nn.Dropout(dropout) for _ in range(3))
        self.activation = F.gelu if gelu else F.relu

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:
        if self.cross:
            q, kv = self.norm1(x), self.norm2(other)
            a = self.cross_attn(q, kv, kv, need_weights=False)[0]
            ff_norm = self.norm3
        else:
            q = self.norm1(x)
            a = self.self_attn(q, q, q, need_weights=False)[0]
            ff_norm = self.norm2
        x = x + self.gamma_1(self.dropout1(a))
        h = self.linear2(self.dropout(self.activation(self.linear1(ff_norm(x)))))
        x = x + self.gamma_2(self.dropout2(h))
        return x if self.norm_out is None else self.norm_out(x)


def sin_positions(length: int, dim: int, max_period: float, device) -> Tensor:
    """1-D sinusoidal positions ``(length, dim)``: cosines then sines, periods
    ``max_period ** (i / (dim/2 - 1))``."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(dim // 2, device=device, dtype=torch.float32)
    phase = pos / max_period ** (i / (dim // 2 - 1))
    return torch.cat([phase.cos(), phase.sin()], -1)


def sin_positions_2d(dim: int, height: int, width: int, max_period: float, device) -> Tensor:
    """2-D sinusoidal positions ``(dim, height, width)``: the first half of the channels
    encodes the width (time) position, the second the height (frequency), each as interleaved
    sines and cosines of periods ``max_period ** (2i / (dim/2))``."""
    half = dim // 2
    freqs = torch.exp(torch.arange(0.0, half, 2, device=device) * -(math.log(max_period) / half))
    w = torch.arange(float(width), device=device)[:, None] * freqs  # (W, half/2)
    h = torch.arange(float(height), device=device)[:, None] * freqs  # (H, half/2)
    pe = torch.zeros(dim, height, width, device=device)
    pe[0:half:2] = w.sin().t()[:, None, :]
    pe[1:half:2] = w.cos().t()[:, None, :]
    pe[half::2] = h.sin().t()[:, :, None]
    pe[half + 1 :: 2] = h.cos().t()[:, :, None]
    return pe


class CrossTransformer(nn.Module):
    """The bottleneck: ``layers`` over the spectrogram branch's tokens (time-major, frequency
    within), ``layers_t`` over the waveform branch's; even layers self-attend, odd layers
    attend to the other branch (``cross_first`` swaps the parity).

    ``time_out=False``: the waveform branch's output is not used (the branches met in the
    encoder, so the waveform decoder starts from the spectrogram decoder): the waveform layers
    from the last cross-attention layer on feed nothing and are not built (demucs builds them
    and never uses their outputs; with them DDP would find parameters without gradients)."""

    def __init__(self, dim, n_layers, heads, hidden_scale, dropout, norm_in, norm_out, gelu,
                 layer_scale, max_period, weight_pos, cross_first, time_out):  # fmt: skip
        super().__init__()
        self.max_period, self.weight_pos = max_period, weight_pos
        self.cross_parity = 0 if cross_first else 1
        self.norm_in = nn.LayerNorm(dim) if norm_in else nn.Identity()
        self.norm_in_t = nn.LayerNorm(dim) if norm_in else nn.Identity()
        kw = dict(dim=dim, heads=heads, hidden=int(dim * hidden_scale), dropout=dropout,
                  gelu=gelu, layer_scale=layer_scale, norm_out=norm_out)  # fmt: skip
        cross = [i % 2 == self.cross_parity for i in range(n_layers)]
        live = n_layers if time_out else max((i for i, c in enumerate(cross) if c), default=0)
        self.layers = nn.ModuleList(AttentionLayer(cross=c, **kw) for c in cross)
        self.layers_t = nn.ModuleList(AttentionLayer(cross=c, **kw) for c in cross[:live])

    def forward(self, x: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        b, c, f, t1 = x.shape
        pos2d = sin_positions_2d(c, f, t1, self.max_period, x.device)
        x = x.permute(0, 3, 2, 1).reshape(b, t1 * f, c)  # tokens (time, frequency)
        x = self.norm_in(x) + self.weight_pos * pos2d.permute(2, 1, 0).reshape(t1 * f, c)
        xt = xt.transpose(1, 2)  # (B, T2, C)
        pos = sin_positions(xt.shape[1], c, self.max_period, x.device)
        xt = self.norm_in_t(xt) + self.weight_pos * pos
        for i, layer in enumerate(self.layers):
            live = i < len(self.layers_t)
            if layer.cross:
                x, xt = layer(x, xt), (self.layers_t[i](xt, x) if live else xt)
            else:
                x, xt = layer(x), (self.layers_t[i](xt) if live else xt)
        x = x.view(b, t1, f, c).permute(0, 3, 2, 1)
        return x, xt.transpose(1, 2)


class ScaledEmbedding(nn.Module):
    """Frequency embedding whose weights are stored divided by ``scale`` (a larger effective
    learning rate), optionally initialised smooth along frequency (a normalised random walk)."""

    def __init__(self, n: int, dim: int, scale: float, smooth: bool):
        super().__init__()
        self.scale = scale
        self.embedding = nn.Embedding(n, dim)
        with torch.no_grad():
            w = self.embedding.weight
            if smooth:
                w.copy_(w.cumsum(0) / torch.arange(1, n + 1, dtype=w.dtype).sqrt()[:, None])
            w.div_(scale)

    def forward(self) -> Tensor:
        return self.embedding.weight * self.scale  # (n, dim)


class HTDemucsNet(nn.Module):
    """One HTDemucs network on inputs of any length (no segment logic): ``(B, C, T)`` →
    ``(B, S, C, T)``. Arguments as :class:`HTDemucs`'s."""

    def __init__(self, n_src, audio_channels, channels, channels_time, growth, n_fft, depth,
                 rewrite, freq_emb, emb_scale, emb_smooth, kernel_size, stride, time_stride,
                 context, context_enc, norm_starts, norm_groups, dconv_mode, dconv_depth,
                 dconv_comp, dconv_init, bottom_channels, t_layers, t_hidden_scale, t_heads,
                 t_dropout, t_norm_in, t_norm_out, t_gelu, t_layer_scale, t_max_period,
                 t_weight_pos_embed, t_cross_first, rescale):  # fmt: skip
        super().__init__()
        self.n_src, self.n_fft, self.hop, self.depth = n_src, n_fft, n_fft // 4, depth
        self.bottom_channels = bottom_channels
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        self.tencoder, self.tdecoder = nn.ModuleList(), nn.ModuleList()
        self.freq_emb = None
        dconv_kw = dict(compress=dconv_comp, depth=dconv_depth, init=dconv_init)
        chin, chin_z = audio_channels, 2 * audio_channels  # waveform / spectrogram inputs
        chout, chout_z = channels_time or channels, channels
        freqs = n_fft // 2
        for index in range(depth):
            freq = freqs > 1
            kernel, stri, pad, last_freq = kernel_size, stride, True, False
            if not freq:  # one bin left: time layers with their own stride
                kernel, stri = 2 * time_stride, time_stride
            elif freqs <= kernel_size:  # the last frequency layer folds the remaining bins
                kernel, pad, last_freq = freqs, False, True
                chout_z = chout = max(chout, chout_z)
            common = dict(norm=index >= norm_starts, groups=norm_groups, rewrite=rewrite,
                          dconv_kw=dconv_kw)  # fmt: skip
            z_kw = dict(kernel=kernel, stride=stri, freq=freq, pad=pad, **common)
            t_kw = dict(kernel=kernel_size, stride=stride, freq=False, pad=True, **common)
            self.encoder.append(EncLayer(chin_z, chout_z, context=context_enc,
                                         dconv=bool(dconv_mode & 1), **z_kw))  # fmt: skip
            if freq:
                self.tencoder.append(EncLayer(chin, chout, context=context_enc, empty=last_freq,
                                              dconv=bool(dconv_mode & 1), **t_kw))  # fmt: skip
            if index == 0:  # the decoders' last layers output every source
                chin, chin_z = audio_channels * n_src, 2 * audio_channels * n_src
            self.decoder.insert(0, DecLayer(chout_z, chin_z, context=context, last=index == 0,
                                            dconv=bool(dconv_mode & 2), **z_kw))  # fmt: skip
            if freq:
                self.tdecoder.insert(0, DecLayer(chout, chin, context=context, empty=last_freq,
                                                 last=index == 0, dconv=bool(dconv_mode & 2),
                                                 **t_kw))  # fmt: skip
            chin, chin_z = chout, chout_z
            chout, chout_z = int(growth * chout), int(growth * chout_z)
            if freq:
                freqs = 1 if freqs <= kernel_size else freqs // stride
            if index == 0 and freq_emb:
                self.freq_emb = ScaledEmbedding(freqs, chin_z, emb_scale, emb_smooth)
                self.freq_emb_scale = freq_emb
        if rescale:  # Demucs' initialisation: conv weights scaled towards std sqrt(ref * std)
            for m in self.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
                    with torch.no_grad():
                        factor = (m.weight.std() / rescale) ** 0.5
                        m.weight.div_(factor)
                        if m.bias is not None:
                            m.bias.div_(factor)
        dim = int(channels * growth ** (depth - 1))
        # the branches met in the encoder: the waveform decoder starts from the spectrogram
        # decoder, and the transformer's waveform output feeds nothing
        self.time_out = not (self.tencoder and self.tencoder[-1].empty)
        if bottom_channels:
            self.channel_upsampler = nn.Conv1d(dim, bottom_channels, 1)
            self.channel_downsampler = nn.Conv1d(bottom_channels, dim, 1)
            self.channel_upsampler_t = nn.Conv1d(dim, bottom_channels, 1)
            if self.time_out:
                self.channel_downsampler_t = nn.Conv1d(bottom_channels, dim, 1)
            dim = bottom_channels
        self.crosstransformer = None
        if t_layers:
            self.crosstransformer = CrossTransformer(
                dim, t_layers, t_heads, t_hidden_scale, t_dropout, t_norm_in, t_norm_out,
                t_gelu, t_layer_scale, t_max_period, t_weight_pos_embed, t_cross_first,
                self.time_out,
            )  # fmt: skip
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _stft(self, x: Tensor) -> Tensor:
        """``(B, C, T)`` → complex ``(B, C, n_fft/2, ceil(T / hop))``: reflect-padded so that
        frame ``k`` is centred on sample ``k * hop + hop / 2``, the Nyquist bin dropped."""
        b, c, t = x.shape
        hop, n = self.hop, math.ceil(t / self.hop)
        pad = hop // 2 * 3
        x = _reflect_pad(x, pad, pad + n * hop - t)
        window = self.window.to(x.dtype)
        z = torch.stft(x.reshape(b * c, -1), self.n_fft, hop, window=window, normalized=True,
                       center=True, pad_mode="reflect", return_complex=True)  # fmt: skip
        return z[:, :-1, 2 : 2 + n].view(b, c, self.n_fft // 2, n)

    def _istft(self, z: Tensor, length: int) -> Tensor:
        hop = self.hop
        pad = hop // 2 * 3
        z = F.pad(z, (2, 2, 0, 1))  # the two frames either side and the Nyquist bin back
        *lead, f, n = z.shape
        total = hop * math.ceil(length / hop) + 2 * pad
        x = torch.istft(z.reshape(-1, f, n), self.n_fft, hop, window=self.window,
                        normalized=True, center=True, length=total)  # fmt: skip
        return x[:, pad : pad + length].reshape(*lead, length)

    def forward(self, mix: Tensor) -> Tensor:
        b, c, length = mix.shape
        z = self._stft(mix)
        x = torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(b, 2 * c, *z.shape[-2:])
        mean, std = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        meant, stdt = mix.mean(dim=(1, 2), keepdim=True), mix.std(dim=(1, 2), keepdim=True)
        xt = (mix - meant) / (1e-5 + stdt)

        skips, skips_t, lengths, lengths_t = [], [], [], []
        for index, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if index < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tencode = self.tencoder[index]
                xt = tencode(xt)
                if tencode.empty:
                    inject = xt  # the branches meet: same stride from here on
                else:
                    skips_t.append(xt)
            x = encode(x, inject)
            if index == 0 and self.freq_emb is not None:
                emb = self.freq_emb()[: x.shape[-2]].t()[None, :, :, None]
                x = x + self.freq_emb_scale * emb
            skips.append(x)

        if self.crosstransformer is not None:
            if self.bottom_channels:
                shape = x.shape
                x = self.channel_upsampler(x.flatten(2)).unflatten(2, shape[2:])
                xt = self.channel_upsampler_t(xt)
            x, xt = self.crosstransformer(x, xt)
            if self.bottom_channels:
                x = self.channel_downsampler(x.flatten(2)).unflatten(2, shape[2:])
                xt = self.channel_downsampler_t(xt) if self.time_out else xt

        offset = self.depth - len(self.tdecoder)
        for index, decode in enumerate(self.decoder):
            x, pre = decode(x, skips.pop(), lengths.pop())
            if index >= offset:
                tdecode = self.tdecoder[index - offset]
                if tdecode.empty:  # the branches part: the waveform decoder starts from `pre`
                    xt, _ = tdecode(pre[:, :, 0], None, lengths_t.pop())
                else:
                    xt, _ = tdecode(xt, skips_t.pop(), lengths_t.pop())

        s = self.n_src
        x = x.view(b, s, -1, *x.shape[-2:]) * std[:, None] + mean[:, None]
        f, n = x.shape[-2:]
        spec = torch.view_as_complex(x.view(b, s, c, 2, f, n).permute(0, 1, 2, 4, 5, 3).float()
                                     .contiguous())  # fmt: skip
        wav = self._istft(spec, length).to(xt.dtype)
        return wav + xt.view(b, s, c, length) * stdt[:, None] + meant[:, None]


def _reflect_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Reflect padding that also works on inputs shorter than the padding: zeros are added
    first so that the reflection has enough samples."""
    t = x.shape[-1]
    need = max(left, right)
    if t <= need:
        extra = need - t + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        x = F.pad(x, (extra_left, extra_right))
        left, right = left - extra_left, right - extra_right
    return F.pad(x, (left, right), mode="reflect")


class HTDemucs(Backbone, Exportable):
    """Hybrid Transformer Demucs, one network or a bag of them.

    Args:
        sources: the stems <drums, bass, other, vocals (Demucs' order)>.
        sample_rate: <44100>. audio_channels: <2>.
        segment: the length (s) the network works on, its training segment: shorter inputs are
            padded to it, longer ones separated in overlapping segments <7.8 s published, 10 s
            in demucs' default configuration>. use_train_segment: ``False``: no segment logic.
        channels: first layer's width <48>; channels_time: the waveform branch's, if different;
        growth: width factor per layer <2>.
        n_fft: <4096 (hop n_fft/4)>. depth: encoder/decoder layers <4>.
        rewrite: 1x1 GLU convolution in each layer. freq_emb: weight of the frequency
            embedding after the first layer <0.2>; emb_scale <10>, emb_smooth.
        kernel_size <8>, stride <4>, time_stride (time layers after the branches meet) <2>,
        context (decoder 1x1 context) <1>, context_enc <0>.
        norm_starts: first layer with GroupNorm <4>; norm_groups <4>.
        dconv_mode: residual DConv branches in the encoder (1), decoder (2) or both (3) <1>;
        dconv_depth <2>, dconv_comp <8>, dconv_init <1e-3>.
        bottom_channels: 1x1 convolutions around the transformer to this width (0: none).
        t_layers: transformer layers per branch <5>; t_hidden_scale <4>; t_heads <8>;
        t_dropout <0>; t_norm_in; t_norm_out; t_gelu; t_layer_scale; t_max_period <1e4>;
        t_weight_pos_embed <1>; t_cross_first <False>.
        rescale: Demucs' weight rescaling at initialisation <0.1>.
        bag_weights: a bag of ``len(bag_weights)`` networks (each row: that network's weight
            per stem, as demucs' ``BagOfModels``); ``None``: one network.

    Shape:
        ``(B, C, T)`` → ``(B, S, C, T)``.
    """

    def __init__(
        self,
        sources: list[str] = ("drums", "bass", "other", "vocals"),
        sample_rate: int = 44100,
        audio_channels: int = 2,
        segment: float = 10.0,
        use_train_segment: bool = True,
        channels: int = 48,
        channels_time: int | None = None,
        growth: float = 2,
        n_fft: int = 4096,
        depth: int = 4,
        rewrite: bool = True,
        freq_emb: float = 0.2,
        emb_scale: float = 10.0,
        emb_smooth: bool = True,
        kernel_size: int = 8,
        stride: int = 4,
        time_stride: int = 2,
        context: int = 1,
        context_enc: int = 0,
        norm_starts: int = 4,
        norm_groups: int = 4,
        dconv_mode: int = 1,
        dconv_depth: int = 2,
        dconv_comp: float = 8,
        dconv_init: float = 1e-3,
        bottom_channels: int = 0,
        t_layers: int = 5,
        t_hidden_scale: float = 4.0,
        t_heads: int = 8,
        t_dropout: float = 0.0,
        t_norm_in: bool = True,
        t_norm_out: bool = True,
        t_gelu: bool = True,
        t_layer_scale: bool = True,
        t_max_period: float = 10000.0,
        t_weight_pos_embed: float = 1.0,
        t_cross_first: bool = False,
        rescale: float = 0.1,
        bag_weights: list[list[float]] | None = None,
    ):
        super().__init__()
        self.sources, self.n_src = list(sources), len(sources)
        self.sample_rate, self.audio_channels = sample_rate, audio_channels
        self.segment, self.use_train_segment = segment, use_train_segment
        if n_fft % 4:
            raise ValueError(f"n_fft must be a multiple of 4 (hop n_fft/4), got {n_fft}")
        weights = bag_weights or [[1.0] * self.n_src]
        if any(len(row) != self.n_src for row in weights):
            raise ValueError(f"bag_weights: one row per network, {self.n_src} weights per row")
        totals = [sum(column) for column in zip(*weights, strict=True)]
        if min(totals) <= 0:
            raise ValueError("bag_weights: every stem needs a positive total weight")
        normalised = [[w / t for w, t in zip(row, totals, strict=True)] for row in weights]
        self.register_buffer("bag", torch.tensor(normalised), persistent=False)
        net = dict(n_src=self.n_src, audio_channels=audio_channels, channels=channels,
                   channels_time=channels_time, growth=growth, n_fft=n_fft, depth=depth,
                   rewrite=rewrite, freq_emb=freq_emb, emb_scale=emb_scale,
                   emb_smooth=emb_smooth, kernel_size=kernel_size, stride=stride,
                   time_stride=time_stride, context=context, context_enc=context_enc,
                   norm_starts=norm_starts, norm_groups=norm_groups, dconv_mode=dconv_mode,
                   dconv_depth=dconv_depth, dconv_comp=dconv_comp, dconv_init=dconv_init,
                   bottom_channels=bottom_channels, t_layers=t_layers,
                   t_hidden_scale=t_hidden_scale, t_heads=t_heads, t_dropout=t_dropout,
                   t_norm_in=t_norm_in, t_norm_out=t_norm_out, t_gelu=t_gelu,
                   t_layer_scale=t_layer_scale, t_max_period=t_max_period,
                   t_weight_pos_embed=t_weight_pos_embed, t_cross_first=t_cross_first,
                   rescale=rescale)  # fmt: skip
        self.models = nn.ModuleList(HTDemucsNet(**net) for _ in weights)

    @property
    def architecture(self) -> str:
        return "HTDemucs" if len(self.models) == 1 else f"HTDemucs (bag of {len(self.models)})"

    @property
    def segment_samples(self) -> int:
        return round(self.segment * self.sample_rate)

    def export_form(self) -> list[str]:
        raise ExportRefused(
            "HTDemucs does not export yet: its spectrogram branch runs on the complex STFT, "
            "which ONNX does not carry (a real-valued path is not built)"
        )

    def _segment(self, mix: Tensor) -> Tensor:
        """One segment: the input zero-padded on both sides to the segment length (as Demucs'
        ``apply_model`` pads it), each network's output weighted per stem, trimmed back."""
        t, want = mix.shape[-1], self.segment_samples
        left = (want - t) // 2
        x = F.pad(mix, (left, want - t - left))
        out = sum(w[:, None, None] * net(x) for w, net in zip(self.bag, self.models, strict=True))
        return out[..., left : left + t]

    def forward(self, mix: Tensor) -> Tensor:
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"HTDemucs takes (batch, {self.audio_channels} channels, time), "
                             f"got {tuple(mix.shape)}")  # fmt: skip
        if self.training or not self.use_train_segment:
            return sum(
                w[:, None, None] * net(mix) for w, net in zip(self.bag, self.models, strict=True)
            )
        if mix.shape[-1] <= self.segment_samples:
            return self._segment(mix)
        return separate_chunked(self._segment, mix, chunk=self.segment_samples, overlap=0.25)


def htdemucs_paper(sources=("drums", "bass", "other", "vocals")) -> HTDemucs:
    """HTDemucs in the ``demucs`` package's default configuration (its ``conf/config.yaml``:
    depth 4, 48 channels, 5 transformer layers of 384 channels, 8 heads), 7.8 s segments as the
    published ``htdemucs`` (a published checkpoint carries its own arguments: the converter
    reads them)."""
    return HTDemucs(list(sources), segment=7.8)
