"""Conv-TasNet (Luo & Mesgarani 2019) and TDCN++ (Kavalerov et al. 2019) as one backbone."""

from __future__ import annotations

import torch
from asteroid_filterbanks import make_enc_dec
from torch import Tensor

from .base import Backbone, ContractError
from .capabilities import Exportable, Streamable
from .layers.tcn import TCN

__all__ = [
    "ConvTasNet",
    "ConvTasNetStream",
    "conv_tasnet_paper",
    "tdcnpp_mixit",
    "mixture_consistency",
]


def mixture_consistency(est: Tensor, mix: Tensor) -> Tensor:
    """Project estimates so that they sum to the mixture (Wisdom et al. 2019, unweighted).

    Shape:
        est ``(B, S, C, T)``, mix ``(B, C, T)`` → ``(B, S, C, T)``.
    """
    return est + (mix - est.sum(1)).unsqueeze(1) / est.shape[1]


class ConvTasNet(Backbone, Streamable, Exportable):
    """Learned encoder → TCN masks → learned decoder, on waveforms.

    Multichannel input is separated channel by channel (channels are folded into the batch).
    Module layout mirrors Asteroid's ``ConvTasNet`` one-to-one, less the last block's residual conv
    that feeds nothing (4,984,881 parameters for the paper configuration with 2 sources, Asteroid's
    5,050,545 less 512 x 128 + 128), so that its checkpoints convert by renaming only.

    Args:
        n_src: number of outputs <C> (M for MixIT).
        sample_rate: sample rate the model is trained at (Hz).
        n_filters: encoder/decoder basis size <N>.
        kernel_size: basis length in samples <L>; the stride is ``L // 2``.
        bn_chan: bottleneck channels <B>.
        hid_chan: channels in each convolutional block <H>.
        skip_chan: skip-connection channels <Sc>.
        conv_kernel_size: depthwise kernel size <P>.
        n_blocks: blocks per repeat <X>.
        n_repeats: repeats <R>.
        norm: ``gLN`` for Conv-TasNet, ``fLN`` for TDCN++ (feature-wise layer norm).
        mask_act: mask nonlinearity (``relu`` as in Asteroid's recipe, ``sigmoid`` as in the paper).
        repeat_skips: TDCN++ skip-residual connections between repeats.
        block_scales: TDCN++ learnable block scales initialised to 0.9^b.
        mixture_consistency: project the outputs so that they sum to the input mixture.
        sources: names of the outputs (music: ordered targets, matched fixed); ``None``:
            anonymous outputs (speech), matched by PIT.
        checkpoint_blocks: recompute the TCN blocks' activations in the backward pass instead
            of keeping them (same values; for long music segments, see ``layers.run_block``).
        framing: ``asteroid`` (no padding; the tail that does not fill a frame is zero in the
            output, as Asteroid) or ``torchaudio`` (input right-padded to the hop and convolved
            with a hop of padding on both ends, as torchaudio's ``ConvTasNet``).
        causal: causal depthwise convs (the paper's causal configuration, with ``norm='cLN'``):
            no output depends on later input beyond the basis window, and :meth:`streamer`
            runs the network on a stream, block by block, with the same outputs.

    Shape:
        ``(B, C, T)`` → ``(B, n_src, C, T)``.
    """

    def __init__(
        self,
        n_src: int = 2,
        sample_rate: int = 8000,
        n_filters: int = 512,
        kernel_size: int = 16,
        bn_chan: int = 128,
        hid_chan: int = 512,
        skip_chan: int = 128,
        conv_kernel_size: int = 3,
        n_blocks: int = 8,
        n_repeats: int = 3,
        norm: str = "gLN",
        mask_act: str = "relu",
        repeat_skips: bool = False,
        block_scales: bool = False,
        mixture_consistency: bool = False,
        sources: list[str] | None = None,
        framing: str = "asteroid",
        checkpoint_blocks: bool = False,
        causal: bool = False,
    ):
        super().__init__()
        if causal and framing != "asteroid":
            raise ValueError(
                "causal=True needs framing='asteroid' (torchaudio's framing pads the input on "
                "both ends, so the first frame would read ahead)"
            )
        if sources is not None and len(sources) != n_src:
            raise ValueError(f"sources {sources} must name all n_src={n_src} outputs")
        self.n_src = n_src
        self.sample_rate = sample_rate
        self.sources = list(sources) if sources else None
        # audio_channels: None (the default): any, channels are separated independently
        self.use_mixture_consistency = mixture_consistency
        if framing not in ("asteroid", "torchaudio"):
            raise ValueError(f"framing must be 'asteroid' or 'torchaudio', got {framing!r}")
        self.framing, self.kernel_size, self.stride = framing, kernel_size, kernel_size // 2
        encoder, decoder = make_enc_dec(
            "free",
            n_filters=n_filters,
            kernel_size=kernel_size,
            stride=kernel_size // 2,
            padding=kernel_size // 2 if framing == "torchaudio" else 0,
        )
        self.encoder = encoder
        self.masker = TCN(
            n_filters,
            n_src,
            bn_chan,
            hid_chan,
            skip_chan,
            conv_kernel_size,
            n_blocks,
            n_repeats,
            norm,
            mask_act,
            repeat_skips,
            block_scales,
            checkpoint_blocks=checkpoint_blocks,
            causal=causal,
        )
        self.decoder = decoder
        self.causal = causal

    def streamer(self, channels: int) -> ConvTasNetStream:
        """A stream of ``channels``-channel input through this causal network (see
        :class:`ConvTasNetStream`); the contract's streaming hook."""
        if not self.causal:
            raise ContractError(
                f"this {self.architecture} is not causal (causal: false): its outputs depend on "
                "the whole input; stream a model trained with causal: true and norm: cLN, e.g. "
                "by the libri2mix_pit_causal recipe, or convtasnet-causal-tiny-random"
            )
        return ConvTasNetStream(self, channels)

    @property
    def export_min_length(self) -> int:
        """Exported graphs take inputs of four encoder frames and more."""
        return max(64, 4 * self.kernel_size)

    @property
    def architecture(self) -> str:
        """``TDCN++`` when the TDCN++ changes are switched on, else ``Conv-TasNet``."""
        m = self.masker
        return (
            "TDCN++" if m.repeat_skips is not None or m.block_scales is not None else "Conv-TasNet"
        )

    def forward(self, mix: Tensor) -> Tensor:
        if mix.ndim != 3:
            raise ValueError(f"ConvTasNet expects (batch, channels, time), got {tuple(mix.shape)}")
        b, c, t = mix.shape
        x = mix.reshape(b * c, 1, t)  # (B*C, 1, T)
        # Shape arithmetic without branches on the length, so that an exported graph (ONNX,
        # torch.export) keeps a dynamic time axis.
        if self.framing == "torchaudio":  # right-pad so that the frames tile the input exactly
            rest = (t - self.kernel_size % 2) % self.stride
            x = torch.nn.functional.pad(x, (0, (self.stride - rest) % self.stride))
        w = self.encoder(x)  # (B*C, N, frames)
        # the masks are not kept in a variable: at inference they are freed once applied, so the
        # decoder does not run with a second (S, N, frames) tensor alive (with TCN.forward's
        # tail: 183 -> 154 MiB peak on a 10 s mixture, torchaudio's, BENCHMARKS.md)
        y = self.decoder(self.masker(w) * w.unsqueeze(1))  # (B*C, S, N, frames) -> (B*C, S, T')
        if self.framing == "torchaudio":  # the padded frames reach past the input
            y = y[..., :t]
        else:  # the samples after the last whole frame: zeros, as Asteroid
            y = torch.nn.functional.pad(y, (0, (t - self.kernel_size) % self.stride))
        est = y.reshape(b, c, self.n_src, t).transpose(1, 2)  # (B, S, C, T)
        if self.use_mixture_consistency:
            est = mixture_consistency(est, mix)
        return est


class ConvTasNetStream:
    """A causal :class:`ConvTasNet` run on a stream: ``push`` blocks of any length, get the
    output samples that no later input can change, and ``flush`` the rest at the end.

    Every encoder frame is computed once, when its last input sample arrives; the TCN runs on
    the new frames with the past of each causal convolution kept in a cache
    (:class:`~zoo.backbones.layers.tcn.ConvCache`); the decoder's overlap-add keeps the
    ``kernel_size - stride`` samples that the next frame still adds to. Each operation sees the
    same numbers as in the offline forward, so the concatenated outputs equal
    ``model(mixture)`` up to float32 rounding (tested for several block sizes).

    Algorithmic latency: ``kernel_size`` samples (a frame is complete only at its last sample);
    the block size adds its own buffering on top.
    """

    def __init__(self, net: ConvTasNet, channels: int):
        self.net, self.channels = net, channels
        self.hop, self.window = net.stride, net.kernel_size
        self.caches = net.masker.stream_caches()
        self.buffer: Tensor | None = None  # input from the first sample not yet output on
        self.carry: Tensor | None = None  # decoder overlap-add tail (C, S, window - hop)

    @property
    def latency(self) -> int:
        """Samples from an input sample's arrival to the last input its output needs."""
        return self.window

    def _finish(self, y: Tensor, mix: Tensor) -> Tensor:
        """``(C, S, k)`` decoded samples and their ``(C, 1, k)`` mixture → ``(S, C, k)``."""
        est = y.transpose(0, 1)  # (S, C, k)
        if self.net.use_mixture_consistency:
            est = mixture_consistency(est[None], mix[:, 0][None])[0]
        return est

    def push(self, block: Tensor) -> Tensor:
        """``(C, n)`` new input → ``(S, C, k)`` output samples that are ready (``k`` may be 0)."""
        x = block[:, None]  # (C, 1, n): channels are the batch, as in forward
        self.buffer = x if self.buffer is None else torch.cat([self.buffer, x], -1)
        n_frames = (self.buffer.shape[-1] - self.window) // self.hop + 1
        if n_frames <= 0:
            return block.new_zeros(self.net.n_src, self.channels, 0)
        net, ready = self.net, n_frames * self.hop
        w = net.encoder(self.buffer[..., : (n_frames - 1) * self.hop + self.window])
        y = net.decoder(net.masker(w, self.caches) * w.unsqueeze(1))  # (C, S, ready + tail)
        if self.carry is not None:
            y[..., : self.carry.shape[-1]] += self.carry
        self.carry = y[..., ready:]
        out = self._finish(y[..., :ready], self.buffer[..., :ready])
        self.buffer = self.buffer[..., ready:]
        return out

    def flush(self) -> Tensor:
        """The remaining ``(S, C, r)`` samples: the last frames' tail, then zeros for input
        after the last whole frame (as the offline forward); the stream is then spent."""
        if self.buffer is None:
            return torch.zeros(self.net.n_src, self.channels, 0)
        rest = self.buffer.shape[-1]
        y = self.buffer.new_zeros(self.channels, self.net.n_src, rest)
        if self.carry is not None:
            tail = self.carry[..., :rest]
            y[..., : tail.shape[-1]] = tail
        out = self._finish(y, self.buffer)
        self.buffer, self.carry = None, None
        self.caches = self.net.masker.stream_caches()
        return out


def conv_tasnet_paper(n_src: int = 2, sample_rate: int = 8000) -> ConvTasNet:
    """The paper's best non-causal configuration (Table II: N=512, L=16, B=128, H=512, Sc=128,
    P=3, X=8, R=3, gLN)."""
    return ConvTasNet(n_src=n_src, sample_rate=sample_rate)


def tdcnpp_mixit(n_src: int = 4, sample_rate: int = 8000) -> ConvTasNet:
    """TDCN++ as described for the MixIT speech experiments: 2.5 ms learned basis with 50 % hop,
    4 repeats of 8 blocks, feature-wise layer norm, skip-residual connections between repeats,
    learnable block scales and mixture consistency. Channel widths are our choice where the paper
    does not state them (see ``conf/backbone/tdcnpp.yaml``)."""
    return ConvTasNet(
        n_src=n_src,
        sample_rate=sample_rate,
        n_filters=256,
        kernel_size=sample_rate // 400,
        bn_chan=256,
        hid_chan=512,
        skip_chan=256,
        n_blocks=8,
        n_repeats=4,
        norm="fLN",
        mask_act="sigmoid",
        repeat_skips=True,
        block_scales=True,
        mixture_consistency=True,
    )
