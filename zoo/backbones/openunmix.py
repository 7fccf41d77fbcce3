"""Open-Unmix (Stöter, Uhlich, Liutkus & Mitsufuji 2019): the per-target spectrogram network.

Parameter names and shapes are those of the ``openunmix`` package, so its published per-target
weights load with ``strict=True``; the normalisation statistics are stored as parameters
(``input_mean`` holds the negated mean and ``input_scale`` the inverse scale, as there).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dsp import BinMoments, stft
from .base import Backbone
from .capabilities import Exportable, InputStatistics, RealSTFTPath, Streamable
from .layers.filtering import wiener

__all__ = [
    "OpenUnmix",
    "OpenUnmixStream",
    "OpenUnmixTarget",
    "bandwidth_to_max_bin",
    "umxhq",
    "umxhq_target",
]


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins up to ``bandwidth`` Hz (inclusive), as Open-Unmix counts them."""
    import numpy as np  # not torch: this runs in __init__, also under torch.device("meta")

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    return int(np.max(np.where(freqs <= bandwidth)[0])) + 1


class LSTMState:
    """The hidden and cell states an LSTM carries between the blocks of a stream."""

    def __init__(self):
        self.hc: tuple[Tensor, Tensor] | None = None


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

    def forward(self, spec: Tensor, state: LSTMState | None = None) -> Tensor:
        """Target magnitudes; ``state``: ``spec`` holds the next frames of a stream (a
        unidirectional LSTM carries its hidden state from one block of frames to the next)."""
        x = spec.permute(3, 0, 1, 2)  # (frames, B, C, F)
        frames, b, c, _ = x.shape
        mix = x.detach()  # the mask multiplies the (constant) mixture magnitude
        x = (x[..., : self.nb_bins] + self.input_mean) * self.input_scale
        x = self.bn1(self.fc1(x.reshape(-1, c * self.nb_bins)))  # (frames*B, H)
        x = torch.tanh(x.reshape(frames, b, self.hidden_size))
        if state is None:
            y = self.lstm(x)[0]
        else:
            y, state.hc = self.lstm(x, state.hc)
        x = torch.cat([x, y], -1)  # skip around the LSTM: (frames, B, 2H)
        x = F.relu(self.bn2(self.fc2(x.reshape(-1, x.shape[-1]))))
        x = self.bn3(self.fc3(x)).reshape(frames, b, c, self.nb_output_bins)
        x = F.relu(x * self.output_scale + self.output_mean) * mix
        return x.permute(1, 2, 3, 0)  # (B, C, F, frames)


def umxhq_target() -> OpenUnmixTarget:
    """The published umxhq configuration of one target (n_fft 4096, 16 kHz bandwidth)."""
    return OpenUnmixTarget(2049, 2, 512, 3, False, bandwidth_to_max_bin(44100, 4096, 16000))


class OpenUnmix(Backbone, InputStatistics, Streamable, Exportable, RealSTFTPath):
    """Open-Unmix separator: one :class:`OpenUnmixTarget` per source on the mixture's magnitude
    STFT, multichannel Wiener filtering of the estimates, inverse STFT.

    The state dict matches ``openunmix.model.Separator``'s network keys
    (``target_models.<source>.*``), so published per-target weights load strictly.

    Args:
        sources: target names, one network each <vocals, drums, bass, other>.
        sample_rate: <44100>.
        n_fft: STFT size <4096>; hop: STFT hop <1024>.
        nb_channels: audio channels <2>.
        hidden_size: <512>; nb_layers: LSTM layers <3>; unidirectional: causal variant.
        bandwidth: highest frequency the networks see, in Hz <16000> (sets ``max_bin``).
        max_bin: the bin count itself, instead of ``bandwidth`` (converted weights store it).
        niter: EM iterations of the Wiener filter at inference <1>; 0 = plain ratio masks. In
            training mode no EM is run (the networks are trained on magnitudes).
        softmask: initial estimates by soft masks instead of magnitudes with mixture phase.
        residual: add a ``residual`` output (mixture minus the targets) before the EM.
        wiener_win_len: frames filtered together (time-varying spatial model) <300>; ``None``: all.

    Shape:
        ``(B, C, T)`` → ``(B, S, C, T)``; :meth:`magnitudes` gives ``(B, S, C, F, frames)``.
    """

    architecture = "Open-Unmix"
    # torch.export (torch 2.11) stops on a data-dependent guard inside nn.LSTM with a dynamic
    # length, after ~90 s on the tiny Open-Unmix: straight to the TorchScript tracer
    exporters = ("torchscript",)

    def __init__(
        self,
        sources: list[str] = ("vocals", "drums", "bass", "other"),
        sample_rate: int = 44100,
        n_fft: int = 4096,
        hop: int = 1024,
        nb_channels: int = 2,
        hidden_size: int = 512,
        nb_layers: int = 3,
        unidirectional: bool = False,
        bandwidth: float | None = 16000,
        max_bin: int | None = None,
        niter: int = 1,
        softmask: bool = False,
        residual: bool = False,
        wiener_win_len: int | None = 300,
    ):
        super().__init__()
        if residual and "residual" in sources:
            raise ValueError("with residual=True the extra output is named 'residual' already")
        if not residual and len(sources) == 1 and niter > 0:
            raise ValueError(
                "the Wiener EM needs two sources or more: set residual=True or niter=0"
            )
        nb_bins = n_fft // 2 + 1
        if max_bin is None and bandwidth:
            max_bin = bandwidth_to_max_bin(sample_rate, n_fft, bandwidth)
        self.target_models = nn.ModuleDict(
            {
                s: OpenUnmixTarget(
                    nb_bins, nb_channels, hidden_size, nb_layers, unidirectional, max_bin
                )
                for s in sources
            }
        )
        self.sample_rate, self.n_fft, self.hop = sample_rate, n_fft, hop
        self.audio_channels = nb_channels
        self.niter, self.softmask, self.residual = niter, softmask, residual
        self.wiener_win_len = wiener_win_len
        self.sources = list(sources) + (["residual"] if residual else [])
        self.n_src = len(self.sources)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.real_stft = None  # use_real_stft(): the exported graphs' path (capabilities.py)

    def stft(self, x: Tensor) -> Tensor:
        """``(..., T)`` → complex ``(..., F, frames)`` (centred, reflect padding)."""
        return stft(x, self.n_fft, self.hop, self.window)

    @torch.no_grad()
    def fit_input_stats(self, mixtures: Iterable[Tensor]) -> list[str]:
        """Set every target model's input scaling from training mixtures ``(B, C, T)``, as
        openunmix's ``train.py`` initialises it: mean and standard deviation per bin of the
        channel-averaged magnitude spectrogram over all frames (the std floored at 1e-4 of its
        largest value); ``input_mean`` = -mean, ``input_scale`` = 1 / std. Returns the state
        keys it set (the system broadcasts them across DDP ranks)."""
        moments = BinMoments()
        for mix in mixtures:
            moments.add(self.stft(mix).abs().mean(1))  # channel-averaged magnitudes
        mean, std = moments.mean_std()
        std = std.clamp_min(1e-4 * std.max())
        keys = []
        for name, m in self.target_models.items():
            m.input_mean.copy_(-mean[: m.nb_bins])
            m.input_scale.copy_(1 / std[: m.nb_bins])
            keys += [f"target_models.{name}.input_mean", f"target_models.{name}.input_scale"]
        return keys

    def magnitudes(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        """Target magnitude estimates ``(B, S, C, F, frames)`` and the mixture STFT."""
        spec = self.stft(mix)  # (B, C, F, frames)
        mag = spec.abs()
        return torch.stack([m(mag) for m in self.target_models.values()], 1), spec

    def forward(self, mix: Tensor) -> Tensor:
        if mix.ndim != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(
                f"OpenUnmix takes (batch, {self.audio_channels} channels, time), got "
                f"{tuple(mix.shape)}"
            )
        if self.real_stft is not None:
            return self._forward_real(mix)
        mags, spec = self.magnitudes(mix)  # (B, S, C, F, N), (B, C, F, N)
        niter = 0 if self.training else self.niter
        mags = mags.permute(0, 4, 3, 2, 1)  # (B, N, F, C, S)
        spec_t = spec.permute(0, 3, 2, 1)  # (B, N, F, C)
        frames = spec_t.shape[1]
        win = self.wiener_win_len or frames
        out = []
        for b in range(mix.shape[0]):
            pieces = [
                wiener(
                    mags[b, t : t + win],
                    spec_t[b, t : t + win],
                    niter,
                    self.softmask,
                    self.residual,
                )
                for t in range(0, frames, win)
            ]
            out.append(torch.cat(pieces, 0))  # (N, F, C, S)
        est = torch.stack(out).permute(0, 4, 3, 2, 1)  # (B, S, C, F, N)
        wav = torch.istft(
            est.reshape(-1, *est.shape[-2:]),
            self.n_fft,
            self.hop,
            window=self.window,
            length=mix.shape[-1],
        )
        return wav.reshape(*est.shape[:3], -1)  # (B, S, C, T)

    def export_form(self) -> list[str]:
        """The graph is the separator before the Wiener EM (``niter`` 0)."""
        notes = []
        if self.niter:
            notes.append(f"Wiener EM not in the graph (niter {self.niter} -> 0: target "
                         "magnitudes with the mixture phase)")  # fmt: skip
            self.niter = 0
        return notes

    def streamer(self, channels: int) -> OpenUnmixStream:
        """A stream through this separator: a unidirectional network with ``niter=0`` (the
        contract's streaming hook, see :class:`OpenUnmixStream`)."""
        from .base import ContractError

        bidirectional = any(m.lstm.bidirectional for m in self.target_models.values())
        if bidirectional or self.niter:
            raise ContractError(
                "this Open-Unmix reads the future ("
                + (
                    "a bidirectional LSTM"
                    if bidirectional
                    else f"a Wiener EM over frames, niter {self.niter}"
                )
                + "): stream one with unidirectional: true and niter: 0"
            )
        return OpenUnmixStream(self)

    def _forward_real(self, mix: Tensor, eps: float = 1e-10) -> Tensor:
        """The separator without the Wiener EM (``niter=0``, what ``wiener`` gives with no
        iterations) on real tensors only, for exported graphs: each target's magnitudes with
        the mixture's phase (or soft masks), the optional residual, the iSTFT."""
        b, c, t = mix.shape
        re, im = self.real_stft.stft(mix.reshape(b * c, t))  # (B*C, F, N) each
        re, im = re.reshape(b, c, *re.shape[-2:]), im.reshape(b, c, *im.shape[-2:])
        mag = (re.square() + im.square()).sqrt()
        mags = torch.stack([m(mag) for m in self.target_models.values()], 1)  # (B, S, C, F, N)
        if self.softmask:
            gain = mags / (eps + mags.sum(1, keepdim=True))
        else:  # |y| e^{i angle(x)} = |y| x / |x|; the networks' outputs are 0 where |x| is
            gain = mags / mag.clamp_min(1e-30)[:, None]
        y_re, y_im = gain * re[:, None], gain * im[:, None]
        if self.residual:
            y_re = torch.cat([y_re, re[:, None] - y_re.sum(1, keepdim=True)], 1)
            y_im = torch.cat([y_im, im[:, None] - y_im.sum(1, keepdim=True)], 1)
        f, frames = re.shape[-2:]
        wav = self.real_stft.istft(y_re.reshape(-1, f, frames), y_im.reshape(-1, f, frames), t)
        return wav.reshape(b, self.n_src, c, t)


class OpenUnmixStream:
    """A unidirectional Open-Unmix with plain ratio masking (``niter=0``) run on a stream.

    The offline path pads the input by reflection (``n_fft // 2`` samples at each end), frames
    it, runs each target network over all frames, masks and inverts by windowed overlap-add.
    Here the left padding is built once ``n_fft // 2 + 1`` samples have arrived, each frame is
    transformed when its last sample arrives, the LSTMs carry their states across blocks
    (:class:`LSTMState`), and the overlap-add keeps the ``n_fft - hop`` samples (and window
    envelope) the next frame still adds to; ``flush`` pads the end by reflection and emits the
    rest. Output equals ``forward`` within float32 rounding (tested for several block sizes).

    Algorithmic latency: ``n_fft`` samples (a sample waits for the last frame that covers it).
    """

    def __init__(self, net: OpenUnmix):
        self.net = net
        self.n_fft, self.hop, self.half = net.n_fft, net.hop, net.n_fft // 2
        if self.n_fft - self.hop <= self.half:  # the end's reflection needs half + 1 samples kept
            from .base import ContractError

            raise ContractError(
                f"streaming Open-Unmix needs hop < n_fft / 2, got hop {self.hop}, "
                f"n_fft {self.n_fft}"
            )
        self._reset()

    def _reset(self) -> None:
        """A fresh stream: LSTM states, buffers and counters back to their start."""
        self.states = [LSTMState() for _ in self.net.target_models]
        self.raw: Tensor | None = None  # input before the left padding could be built
        self.buffer: Tensor | None = None  # padded input from the next frame's first sample
        self.ola = self.env = None  # overlap-add tails (S, C, n_fft - hop), (n_fft - hop,)
        self.skip = self.half  # padded samples not to output (the left padding)
        self.seen = self.out = 0  # input samples in, output samples out

    @property
    def latency(self) -> int:
        return self.n_fft

    def _frames(self, last: bool = False) -> Tensor:
        """Transform, separate and overlap-add the whole frames in the buffer; the final
        samples ``(S, C, k)``."""
        net, n_fft, hop = self.net, self.n_fft, self.hop
        n = (self.buffer.shape[-1] - n_fft) // hop + 1
        s, c = net.n_src, self.buffer.shape[0]
        if n <= 0:
            return self.buffer.new_zeros(s, c, 0)
        seg = self.buffer[:, : (n - 1) * hop + n_fft]
        spec = torch.stft(seg, n_fft, hop, window=net.window, center=False, return_complex=True)
        nets = zip(net.target_models.values(), self.states, strict=True)
        mags = torch.stack([m(spec.abs()[None], st)[0] for m, st in nets])  # (S, C, F, n)
        y = wiener(mags.permute(3, 2, 1, 0), spec.permute(2, 1, 0), 0, net.softmask, net.residual)
        frames = torch.fft.irfft(y.permute(3, 2, 1, 0), n=n_fft, dim=2) * net.window[:, None]
        # (S, C, n_fft, n) windowed frames -> overlap-add, with the window's squared envelope
        length = (n - 1) * hop + n_fft
        sig = F.fold(frames.reshape(s * c, n_fft, n), (1, length), (1, n_fft), stride=(1, hop))
        sig = sig.reshape(s, c, length)
        ones = (net.window**2)[None, :, None].expand(1, n_fft, n)
        env = F.fold(ones, (1, length), (1, n_fft), stride=(1, hop)).reshape(length)
        if self.ola is not None:
            sig[..., : self.ola.shape[-1]] += self.ola
            env[: self.env.shape[-1]] += self.env
        ready = length if last else n * hop
        self.ola, self.env = sig[..., ready:], env[ready:]
        self.buffer = self.buffer[:, n * hop :]
        return sig[..., :ready] / env[:ready].clamp_min(1e-11)

    def _emit(self, y: Tensor) -> Tensor:
        drop = min(self.skip, y.shape[-1])
        self.skip -= drop
        y = y[..., drop:]
        y = y[..., : max(0, self.seen - self.out)]
        self.out += y.shape[-1]
        return y

    def push(self, block: Tensor) -> Tensor:
        self.seen += block.shape[-1]
        if self.buffer is None:
            self.raw = block if self.raw is None else torch.cat([self.raw, block], -1)
            if self.raw.shape[-1] <= self.half:  # the left padding needs half + 1 samples
                return block.new_zeros(self.net.n_src, block.shape[0], 0)
            pad = self.raw[:, 1 : self.half + 1].flip(-1)
            self.buffer, self.raw = torch.cat([pad, self.raw], -1), None
        else:
            self.buffer = torch.cat([self.buffer, block], -1)
        return self._emit(self._frames())

    def flush(self) -> Tensor:
        if self.buffer is None:
            if self.raw is None:
                return torch.zeros(self.net.n_src, self.net.audio_channels, 0)
            raise ValueError(
                f"a stream of {self.raw.shape[-1]} samples is shorter than Open-Unmix's "
                f"reflection padding needs ({self.half + 1} samples)"
            )
        tail = self.buffer[:, -self.half - 1 : -1].flip(-1)  # reflection of the last samples
        self.buffer = torch.cat([self.buffer, tail], -1)
        y = self._emit(self._frames(last=True))
        rest = self.seen - self.out
        if rest > 0:
            y = torch.cat([y, y.new_zeros(*y.shape[:2], rest)], -1)
        self._reset()
        return y


def umxhq(**kwargs) -> OpenUnmix:
    """The published umxhq separator configuration (MUSDB18-HQ; weights via ``zoo.load``)."""
    return OpenUnmix(**kwargs)
