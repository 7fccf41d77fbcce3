"""Meta-TasNet (Samuel, Ganeshan & Naradowsky 2020, "Meta-learning extractors for music source
separation") as a waveform backbone.

A Conv-TasNet-style extractor per instrument whose masking-TCN parameters are *generated* from an
instrument embedding: every convolution kernel and group-norm affine of the masking network is
``θ = W P e_i`` (``e_i``: the instrument's embedding, ``P``: a per-layer bottleneck, ``W``: a
per-layer linear map to the weights), so the four extractors share the generator. Three stages at
8, 16 and 32 kHz; each stage's encoder stride doubles with its rate so all stages have the same
number of frames, and each stage's masking network also reads the previous stage's separated
latents. The encoder has parallel convolutions of several kernel sizes plus a learned projection of
the log-power STFT; the decoder mirrors the convolutions. Training adds the paper's auxiliary
terms (see :meth:`MetaTasNet.auxiliary_loss`).

Hyper-parameters follow the authors' code defaults (pfnet-research/meta-tasnet, ``train.py``):
N=440, L=W=20, B=H=160, 6 layers x 3 stacks, kernel 3, 3 encoder filters, 256 "mel" channels,
embedding 8 with bottleneck 5, loss weights: dissimilarity 3.0, similarity 2.0, reconstruction
0.05. Not reproduced: the training-set statistics that normalise the spectrogram branch (a learned
per-bin affine is kept, initialised to identity), Ranger + SGDR (the recipe uses Adam).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dsp import BinMoments, resample_differentiable
from .base import Backbone
from .capabilities import AuxiliaryLoss, Exportable, ExportRefused, InputStatistics
from .layers import run_block

__all__ = ["MetaTasNet"]


class _InstrumentConv(nn.Module):
    """1-D convolution applied to every instrument's features ``(B, S, C, T)``.

    ``generated=True``: the kernel of instrument ``i`` is ``W (P e_i)`` (Meta-TasNet);
    ``generated=False``: independent kernels per instrument (the paper's baseline).
    """

    def __init__(
        self,
        n_inst: int,
        emb: int,
        bottleneck: int,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        dilation: int = 1,
        groups: int = 1,
        padding: int = 0,
        generated: bool = True,
    ):
        super().__init__()
        self.n_inst, self.c_in, self.c_out, self.kernel = n_inst, c_in, c_out, kernel
        self.dilation, self.groups, self.padding, self.generated = (
            dilation,
            groups,
            padding,
            generated,
        )
        if generated:
            self.project = nn.Linear(emb, bottleneck)  # P
            self.weights = nn.Linear(bottleneck, c_out * (c_in // groups) * kernel)  # W
        else:
            self.conv = nn.Conv1d(
                n_inst * c_in, n_inst * c_out, kernel, 1, padding, dilation, n_inst * groups, False
            )

    def forward(self, emb: Tensor | None, x: Tensor) -> Tensor:
        b, s, _, t = x.shape
        x = x.reshape(b, s * self.c_in, t)
        if self.generated:
            kernel = self.weights(self.project(emb))  # (S, C' C/g k)
            kernel = kernel.reshape(s * self.c_out, self.c_in // self.groups, self.kernel)
            y = F.conv1d(x, kernel, None, 1, self.padding, self.dilation, s * self.groups)
        else:
            y = self.conv(x)
        return y.reshape(b, s, self.c_out, -1)


class _InstrumentNorm(nn.Module):
    """Group norm (8 groups per instrument) with a generated (or per-instrument) affine."""

    def __init__(self, n_inst: int, emb: int, bottleneck: int, channels: int, generated: bool):
        super().__init__()
        self.channels, self.generated = channels, generated
        if generated:
            self.project = nn.Linear(emb, bottleneck)
            self.affine = nn.Linear(bottleneck, 2 * channels)
        else:
            self.norm = nn.GroupNorm(n_inst * 8, n_inst * channels, eps=1e-8)

    def forward(self, emb: Tensor | None, x: Tensor) -> Tensor:
        b, s, c, t = x.shape
        flat = x.reshape(b, s * c, t)
        if self.generated:
            affine = self.affine(self.project(emb))  # (S, 2C)
            scale, shift = affine[:, :c].reshape(-1), affine[:, c:].reshape(-1)
            y = F.group_norm(flat, s * 8, scale, shift, 1e-8)
        else:
            y = self.norm(flat)
        return y.reshape(b, s, c, t)


class _TCNBlock(nn.Module):
    """One masking-TCN block; ``residual=False`` for the last block, whose residual output
    would feed nothing (the authors' code computes it and discards it)."""

    def __init__(self, n, e1, e2, bn, hid, kernel, dilation, generated, residual=True):
        super().__init__()
        self.conv = _InstrumentConv(n, e1, e2, bn, hid, generated=generated)
        self.act1, self.norm1 = nn.PReLU(), _InstrumentNorm(n, e1, e2, hid, generated)
        pad = dilation * (kernel - 1) // 2
        self.dconv = _InstrumentConv(n, e1, e2, hid, hid, kernel, dilation, hid, pad, generated)
        self.act2, self.norm2 = nn.PReLU(), _InstrumentNorm(n, e1, e2, hid, generated)
        self.res = _InstrumentConv(n, e1, e2, hid, bn, generated=generated) if residual else None
        self.skip = _InstrumentConv(n, e1, e2, hid, bn, generated=generated)

    def forward(self, emb, x):
        y = self.norm1(emb, self.act1(self.conv(emb, x)))
        y = self.norm2(emb, self.act2(self.dconv(emb, y)))
        res = self.res(emb, y) if self.res is not None else None
        return res, self.skip(emb, y)


class _MaskTCN(nn.Module):
    """Masking network of all instruments at once: ``(B, S, N_in, T')`` → softmax masks."""

    def __init__(self, n, e1, e2, n_in, n_out, bn, hid, layers, stacks, kernel, generated,
                 checkpoint_blocks=False):  # fmt: skip
        super().__init__()
        self.checkpoint_blocks = checkpoint_blocks
        self.act_in, self.norm_in = nn.PReLU(), _InstrumentNorm(n, e1, e2, n_in, generated)
        self.conv_in = _InstrumentConv(n, e1, e2, n_in, bn, generated=generated)
        self.act_bn, self.norm_bn = nn.PReLU(), _InstrumentNorm(n, e1, e2, bn, generated)
        self.blocks = nn.ModuleList(
            _TCNBlock(n, e1, e2, bn, hid, kernel, 2**i, generated, s * layers + i + 1 < n_blocks)
            for s in range(stacks)
            for i in range(layers)
            for n_blocks in [stacks * layers]
        )
        self.act_skip, self.norm_skip = nn.PReLU(), _InstrumentNorm(n, e1, e2, bn, generated)
        self.conv_out = _InstrumentConv(n, e1, e2, bn, n_out, generated=generated)
        self.act_out, self.norm_out = nn.PReLU(), _InstrumentNorm(n, e1, e2, n_out, generated)

    def forward(self, emb, x):
        x = self.conv_in(emb, self.norm_in(emb, self.act_in(x)))
        x = self.norm_bn(emb, self.act_bn(x))
        skips = 0.0
        for block in self.blocks:
            res, skip = run_block(block, emb, x, checkpoint=self.checkpoint_blocks)
            x, skips = (x if res is None else x + res), skips + skip
        m = self.conv_out(emb, self.norm_skip(emb, self.act_skip(skips)))
        return torch.softmax(self.norm_out(emb, self.act_out(m)), dim=1)  # over instruments


class _Encoder(nn.Module):
    """Parallel strided convolutions (kernels L, 2L, 4L...) + a learned projection of the
    log-power STFT, resampled to the same frames, then a 1x1 bottleneck."""

    def __init__(self, n, kernel, stride, filters, mels, sample_rate):
        super().__init__()
        k_fft = max(1, sample_rate // 8000)
        self.n_fft, self.hop = 1024 * k_fft, 256 * k_fft
        bins = self.n_fft // 2 + 1
        self.convs = nn.ModuleList(
            nn.Conv1d(1, n // 4, kernel * 2**i, stride, (kernel * 2**i - stride) // 2, bias=False)
            for i in range(filters)
        )
        # dataset statistics of the log-power spectrogram (fixed; MetaTasNet.fit_input_stats),
        # then a learned affine, as in the authors' code
        self.register_buffer("spec_mean", torch.zeros(1, bins, 1))
        self.register_buffer("spec_std", torch.ones(1, bins, 1))
        self.spec_scale = nn.Parameter(torch.ones(1, bins, 1))
        self.spec_shift = nn.Parameter(torch.zeros(1, bins, 1))
        self.spec_proj = nn.Conv1d(bins, mels, 1)  # the code's learned "mel" transform
        self.bottleneck = nn.Sequential(
            nn.Conv1d(filters * (n // 4) + mels, n, 1, bias=False),
            nn.ReLU(),
            nn.Conv1d(n, n, 1, bias=False),
        )
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def log_power(self, x: Tensor) -> Tensor:  # (B, 1, T) -> (B, bins, frames)
        spec = torch.stft(x[:, 0], self.n_fft, self.hop, window=self.window, return_complex=True)
        return torch.log10(spec.abs().square() + 1e-8)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, T) -> (B, N, T')
        conv = F.relu(torch.cat([c(x) for c in self.convs], 1))
        logp = (self.log_power(x) - self.spec_mean) / self.spec_std
        logp = logp * self.spec_scale + self.spec_shift
        mel = F.interpolate(
            self.spec_proj(logp), size=conv.shape[-1], mode="linear", align_corners=True
        )
        return self.bottleneck(torch.cat([conv, mel], 1))


class _Decoder(nn.Module):
    """1x1 transposed conv to the filter groups, then one transposed conv per kernel size."""

    def __init__(self, n, kernel, stride, filters):
        super().__init__()
        self.widths = [n // 2 ** (i + 1) for i in range(filters)]
        self.bottleneck = nn.Sequential(
            nn.ConvTranspose1d(n, sum(self.widths), 1, bias=False), nn.ReLU()
        )
        self.convs = nn.ModuleList(
            nn.ConvTranspose1d(
                w, 1, kernel * 2**i, stride, (kernel * 2**i - stride) // 2, bias=False
            )
            for i, w in enumerate(self.widths)
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, N, T') -> (B, 1, T)
        parts = self.bottleneck(x).split(self.widths, 1)
        return sum(c(p) for c, p in zip(self.convs, parts, strict=True))


class _Stage(nn.Module):
    def __init__(self, n_inst, sr, n, kernel, stride, bn, hid, e1, e2, layers, stacks, conv_k,
                 filters, mels, partial, generated, checkpoint_blocks=False):  # fmt: skip
        super().__init__()
        self.sample_rate, self.n = sr, n
        self.encoder = _Encoder(n, kernel, stride, filters, mels, sr)
        self.decoder = _Decoder(n, kernel, stride, filters)
        n_in = n + n // 2 if partial else n
        self.mask = _MaskTCN(
            n_inst, e1, e2, n_in, n, bn, hid, layers, stacks, conv_k, generated, checkpoint_blocks
        )  # fmt: skip
        self.embedding = nn.Embedding(n_inst, e1) if generated else None

    def forward(self, mix: Tensor, hidden: Tensor | None):
        """mix ``(B, 1, T)``, previous stage's latents ``(B, S, N/2, T')`` → estimates
        ``(B, S, 1, T)``, separated latents ``(B, S, N, T')`` and the mixture latent."""
        s = self.mask.conv_out.n_inst
        latent = self.encoder(mix)  # (B, N, T')
        latents = latent[:, None].expand(-1, s, -1, -1)  # (B, S, N, T')
        x = latents if hidden is None else torch.cat([latents, hidden], 2)
        emb = self.embedding.weight if self.embedding is not None else None
        sep = latents * self.mask(emb, x)  # (B, S, N, T')
        b, _, n, t = sep.shape
        est = self.decoder(sep.reshape(b * s, n, t)).reshape(b, s, 1, -1)
        return est, sep, latent


def _si_snr(est: Tensor, ref: Tensor) -> Tensor:
    """Meta-TasNet's SI-SNR (no mean removal), ``(..., T)`` → ``(...)`` dB."""
    power = ref.square().sum(-1, keepdim=True) + 1e-8
    target = (est * ref).sum(-1, keepdim=True) / power * ref
    noise = est - target
    return 10 * (
        torch.log10(target.square().sum(-1).clamp_min(1e-8))
        - torch.log10(noise.square().sum(-1).clamp_min(1e-8))
    )


class MetaTasNet(Backbone, InputStatistics, AuxiliaryLoss, Exportable):
    """Multi-stage Meta-TasNet: instrument-generated masking TCNs at 8, 16 and 32 kHz.

    Args:
        sources: instrument names, one extractor each <vocals, drums, bass, other>.
        base_rate: first stage's sample rate <8000>; stage ``i`` runs at ``base_rate * 2**i``
            and the model's input/output rate is the last stage's <32000>.
        n_stages: <3>.
        n_filters: latent channels of the first stage <N=440> (doubled per stage).
        kernel_size: base encoder kernel <L=20>; stride: encoder stride <W=20> (both doubled per
            stage, so every stage has the same frame rate).
        bn_chan: masking bottleneck <B=160>; hid_chan: TCN hidden channels <H=160>.
        n_layers: TCN layers per stack <6>; n_stacks: <3>; conv_kernel_size: <3>.
        enc_filters: parallel encoder convolutions <3>; mels: spectrogram projection <256>.
        emb_dim: instrument embedding <E_1=8>; emb_bottleneck: <E_2=5>.
        generated: generate the masking parameters (``False``: independent per instrument).
        rescale_to_mixture: multiply the outputs by the gain that makes their sum closest to the
            mixture (least squares, per item and channel). The authors' SI-SNR loss leaves the
            output scale free while museval's SDR is not scale-invariant (a mini run without it:
            SI-SDRi +0.9 dB, SDR -4 dB); the gain uses the mixture only and does not change
            SI-SNR. Ours, not the paper's.
        dissimilarity_weight, similarity_weight, reconstruction_weight: auxiliary loss weights
            <3.0, 2.0, 0.05>.
        checkpoint_blocks: recompute the masking TCN blocks' activations in the backward pass
            instead of keeping them (same values and gradients; ours, for memory).

    Shape:
        ``(B, C, T)`` at ``sample_rate`` → ``(B, S, C, T)`` (channels separated independently).
    """

    architecture = "Meta-TasNet"

    def __init__(
        self,
        sources: list[str] = ("vocals", "drums", "bass", "other"),
        base_rate: int = 8000,
        n_stages: int = 3,
        n_filters: int = 440,
        kernel_size: int = 20,
        stride: int = 20,
        bn_chan: int = 160,
        hid_chan: int = 160,
        n_layers: int = 6,
        n_stacks: int = 3,
        conv_kernel_size: int = 3,
        enc_filters: int = 3,
        mels: int = 256,
        emb_dim: int = 8,
        emb_bottleneck: int = 5,
        generated: bool = True,
        dissimilarity_weight: float = 3.0,
        similarity_weight: float = 2.0,
        reconstruction_weight: float = 0.05,
        rescale_to_mixture: bool = True,
        checkpoint_blocks: bool = False,
    ):
        super().__init__()
        for c in (n_filters, bn_chan, hid_chan):
            if c % 8:
                raise ValueError(f"channel counts must be multiples of 8 (group norm), got {c}")
        self.sources = list(sources)
        self.n_src = len(self.sources)
        self.base_rate, self.n_stages = base_rate, n_stages
        self.sample_rate = base_rate * 2 ** (n_stages - 1)
        self.stride = stride
        self.weights = (dissimilarity_weight, similarity_weight, reconstruction_weight)
        self.rescale_to_mixture = rescale_to_mixture
        self.stages = nn.ModuleList(
            _Stage(
                self.n_src,
                base_rate * 2**i,
                n_filters * 2**i,
                kernel_size * 2**i,
                stride * 2**i,
                bn_chan,
                hid_chan,
                emb_dim,
                emb_bottleneck,
                n_layers,
                n_stacks,
                conv_kernel_size,
                enc_filters,
                mels,
                i > 0,
                generated,
                checkpoint_blocks,
            )  # fmt: skip
            for i in range(n_stages)
        )
        self._cache: dict | None = None

    def forward(self, mix: Tensor) -> Tensor:
        if mix.ndim != 3:
            raise ValueError(f"MetaTasNet expects (batch, channels, time), got {tuple(mix.shape)}")
        b, c, t = mix.shape
        quantum = self.stride * 2 ** (self.n_stages - 1)  # every stage's stride divides it
        x = F.pad(mix.reshape(b * c, 1, t), (0, -t % quantum))
        hidden, stages = None, []
        for stage in self.stages:
            xi = resample_differentiable(x, self.sample_rate, stage.sample_rate)
            est, hidden, latent = stage(xi, hidden)
            stages.append((xi, est, latent))
        self._cache = {"stages": stages, "shape": (b, c, t)} if self.training else None
        est = est[..., 0, :t]  # (BC, S, T)
        if self.rescale_to_mixture:
            total = est.sum(1)  # (BC, T)
            ref = mix.reshape(b * c, t)
            gain = (total * ref).sum(-1) / total.square().sum(-1).clamp_min(1e-8)
            est = est * gain[:, None, None]
        return est.reshape(b, c, self.n_src, t).transpose(1, 2)  # (B, S, C, T)

    def export_form(self) -> list[str]:
        raise ExportRefused(
            "Meta-TasNet does not export yet: torch.export specialises its length (the stages' "
            "resampling and padding)"
        )

    @torch.no_grad()
    def fit_input_stats(self, mixtures: Iterable[Tensor]) -> list[str]:
        """Set each stage's spectrogram normalisation from training mixtures ``(B, C, T)`` at
        ``sample_rate``, as the authors' ``compute_stats`` does: mean and standard deviation
        per bin of the log10 power spectrogram (at the stage's rate) over all frames. Returns
        the state keys it set (the system broadcasts them across DDP ranks)."""
        moments = [BinMoments() for _ in self.stages]
        for mix in mixtures:
            x = mix.reshape(-1, 1, mix.shape[-1])
            for acc, stage in zip(moments, self.stages, strict=True):
                acc.add(
                    stage.encoder.log_power(
                        resample_differentiable(x, self.sample_rate, stage.sample_rate)
                    )
                )
        keys = []
        for i, (acc, stage) in enumerate(zip(moments, self.stages, strict=True)):
            mean, std = acc.mean_std(unbiased=True)  # torch.std's estimate, as the authors'
            stage.encoder.spec_mean.copy_(mean[None, :, None])
            stage.encoder.spec_std.copy_(std.clamp_min(1e-6)[None, :, None])
            keys += [f"stages.{i}.encoder.spec_mean", f"stages.{i}.encoder.spec_std"]
        return keys

    def auxiliary_loss(self, ref: Tensor) -> Tensor:
        """The paper's extra training terms for the last :meth:`forward` (training mode):
        SI-SNR of the earlier stages' estimates, reconstruction of the mixture through each
        stage's encoder/decoder (weight 0.05), and on each stage's encoder latents of the true
        sources a cosine dissimilarity between instruments (weight 3.0, minimised) and a cosine
        similarity of one instrument across the batch (weight 2.0, maximised). The weights are
        the authors' relative to their loss summed over the 4 instruments; the system's main
        loss averages over instruments, so these terms are divided by the instrument count.
        Silent references are left out, as in the authors' code.

        Shape:
            ref ``(B, S, C, T)`` at ``sample_rate`` → scalar.
        """
        if self._cache is None:
            raise RuntimeError("auxiliary_loss needs a forward pass in training mode first")
        b, c, t = self._cache["shape"]
        s = self.n_src
        w_dis, w_sim, w_rec = self.weights
        quantum = self.stride * 2 ** (self.n_stages - 1)
        r = F.pad(ref.transpose(1, 2).reshape(b * c, s, t), (0, -t % quantum))  # (BC, S, T)
        total = ref.new_zeros(())
        for i, (stage, (xi, est, latent)) in enumerate(
            zip(self.stages, self._cache["stages"], strict=True)
        ):
            ri = resample_differentiable(r, self.sample_rate, stage.sample_rate)  # (BC, S, Ti)
            valid = (ri.square().sum(-1) > 0).to(ri.dtype)  # (BC, S)
            if i < self.n_stages - 1:  # the last stage is the main loss
                snr = _si_snr(est[:, :, 0], ri)
                total = total - (snr * valid).sum() / valid.sum().clamp_min(1)
            recon = stage.decoder(latent)  # the mixture through encoder + decoder
            total = total - w_rec * _si_snr(recon[:, 0], xi[:, 0]).mean() / s
            lat = stage.encoder(ri.reshape(-1, 1, ri.shape[-1]))  # (BC*S, N, T')
            lat = lat.reshape(b * c, s, *lat.shape[1:]).transpose(2, 3)  # (BC, S, T', N)
            lat = lat * valid[:, :, None, None]
            ia, ib = torch.triu_indices(s, s, 1, device=ref.device)
            dis = F.cosine_similarity(lat[:, ia].abs(), lat[:, ib].abs(), dim=-1)  # (BC, P, T')
            n_pairs = (valid[:, ia] * valid[:, ib]).sum().clamp_min(1e-8)
            sim = F.cosine_similarity(lat, lat.roll(1, 0), dim=-1)  # same instrument, other item
            n_same = (valid * valid.roll(1, 0)).sum().clamp_min(1e-8)
            total = total + w_dis * (dis.sum((0, 1)) / n_pairs).mean() / s
            total = total - w_sim * (sim.sum((0, 1)) / n_same).mean() / s
        return total
