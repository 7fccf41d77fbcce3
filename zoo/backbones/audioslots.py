"""AudioSlots (Reddy, Wisdom, Greff, Hershey & Kipf 2023, "AudioSlots: a slot-centric generative
model for audio separation") as a waveform backbone.

A compressed magnitude spectrogram goes through a ResNet-style CNN encoder with reduced stride
(a coarse grid of feature vectors), a transformer whose learned slot queries self-attend and then
cross-attend to those features, and a spatial-broadcast decoder that turns each slot embedding into
one spectrogram. Nothing in the network orders the slots: permuting the slot queries permutes the
outputs (tested), so training matches slots to sources (Hungarian loss on compressed magnitudes).

Long inputs are cut into non-overlapping clips (the paper's test protocol). The paper orders the
slots of each clip with the ground-truth sources "for simplicity" (``oracle_stitch``, scored by the
system beside the blind result); blind, either the clips overlap by half and each clip's slots
are aligned to the previous clip's on the overlap (``carry=False``), or, with ``carry=True`` (the
fix its limitations section names, as Slot Attention for Video does across frames), a small
learned predictor turns the slots of clip k into the slot queries of clip k+1, trained on
multi-clip segments where the matching over the whole segment rewards a slot that follows its
source; the clips are then joined in slot order, without any alignment heuristic.

The paper states the STFT (window 512, hop 125 at 16 kHz, magnitudes compressed with power 0.3),
the 0.5 s input clips, the encoder grid (32 x 8), four transformer layers, the decoder's Fourier
position features and the masking at test time. Widths, head count, Fourier feature count and
decoder depth are not all given: the defaults here are ours (marked in ``conf/backbone/
audioslots.yaml``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..inference import iter_chunks, join_chunks, separate_chunked
from .base import Backbone
from .capabilities import Exportable, ExportRefused, NeedsSources, RealSTFTPath, TestProtocol

__all__ = ["AudioSlots", "AudioSlotsAutoencoder", "fourier_features"]


def fourier_features(n_f: int, n_t: int, n_freqs: int, device=None) -> Tensor:
    """Sinusoidal features of the (frequency, time) grid positions scaled to [-1, 1]:
    ``(n_f * n_t, 4 n_freqs + 2)`` (the coordinates themselves included)."""
    f = torch.linspace(-1, 1, n_f, device=device)
    t = torch.linspace(-1, 1, n_t, device=device)
    grid = torch.stack(torch.meshgrid(f, t, indexing="ij"), -1).reshape(-1, 2)  # (F*N, 2)
    scales = (2.0 ** torch.arange(n_freqs, device=device)) * math.pi  # octaves
    angles = grid[:, :, None] * scales  # (F*N, 2, n_freqs)
    return torch.cat([grid, angles.sin().flatten(1), angles.cos().flatten(1)], -1)


class _ResBlock(nn.Module):
    """Basic residual block: two 3x3 convs (group norm, ReLU), strided shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.skip = (
            nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.skip(x))


class SlotDecoderLayer(nn.Module):
    """One pre-norm transformer decoder layer over the slots: self-attention among the slots,
    cross-attention to the encoder tokens, an MLP. ``query_pos`` (the learned slot queries, as
    DETR's object queries, which the AudioSlots paper cites) is added to the queries and keys of
    the self-attention and to the queries of the cross-attention at every layer; with
    ``query_pos`` 0 it is torch's ``TransformerDecoderLayer(norm_first=True)``. With
    ``from_zero`` (the first layer of slots that start at 0: attending among equal slots gives
    each the same constant, and normalising 0 gives a constant) it starts at the
    cross-attention, with the queries alone as its queries.

    Shape:
        slots ``(N, K, D)``, query_pos ``(N, K, D)`` or 0, tokens ``(N, L, D)`` → ``(N, K, D)``.
    """

    def __init__(self, dim: int, heads: int, hidden: int, from_zero: bool = False):
        super().__init__()
        if from_zero:
            self.norm1 = self.self_attn = None
            self.norm2 = nn.Identity()
        else:
            self.norm1 = nn.LayerNorm(dim)
            self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, slots: Tensor, query_pos: Tensor | float, tokens: Tensor) -> Tensor:
        if self.self_attn is not None:
            x = self.norm1(slots)
            q = x + query_pos
            slots = slots + self.self_attn(q, q, x, need_weights=False)[0]
        q = self.norm2(slots) + query_pos
        slots = slots + self.cross_attn(q, tokens, tokens, need_weights=False)[0]
        return slots + self.linear2(F.relu(self.linear1(self.norm3(slots))))


class AudioSlots(Backbone, TestProtocol, Exportable, RealSTFTPath):
    """Slot-centric separator: spectrogram → encoder grid → slots → one spectrogram per slot.

    Args:
        n_slots: number of slots (outputs) <n = number of sources: 2 on Libri2Mix>; more slots
            than sources are matched by the Hungarian loss, the others pushed to silence.
        sample_rate: <16000>.
        n_fft: STFT window <512>; hop: STFT hop <125>; power: magnitude compression <0.3>.
        chunk_seconds: clip length the model separates at a time <0.5>; longer inputs are cut
            into clips (see ``carry``).
        carry: carry the slots from clip to clip (a learned predictor makes the next clip's
            queries from them); training segments longer than a clip then run clip by clip.
            ``False``: clips are independent; at test they overlap by half, their slots aligned
            to the previous clip's on the overlap (by what sets each slot apart from the others:
            the slots' mean, mixture-like, removed first) and cross-faded.
        channels: encoder stage widths; each stage halves both axes (three stages: 257 x 65 bins
            x frames → 33 x 9; the paper's grid is 32 x 8).
        dim: slot and token width; heads: attention heads; n_layers: transformer layers <4>.
        decoder_hidden, decoder_layers: the shared MLP of the spatial-broadcast decoder.
        n_fourier: octaves of Fourier position features (per axis, sine and cosine).
        queries: how the learned slot queries enter the transformer: ``"detr"`` (the slots start
            at 0 and the queries are added at every layer, as DETR's object queries, which the
            paper cites) or ``"initial"`` (the queries are the slots' initial value only).
        token_norm: layer-normalise the encoder tokens before the cross-attention.
        mask: at inference, turn the slot magnitudes into ``"wiener"`` (power ratio) or
            ``"ibm"`` (binary) masks on the mixture STFT, or ``"none"`` (the generated magnitudes
            with the mixture phase).
        train_masked: in training too, output the Wiener-masked mixture instead of the generated
            magnitudes with the mixture phase (the paper's generative training). Ours: on the
            short mini budget the generative decoder stays near the mean spectrogram.

    Shape:
        ``(B, C, T)`` → ``(B, n_slots, C, T)`` (channels separated independently);
        :meth:`slot_spectrograms`: ``(N, 1, F, frames)`` compressed magnitudes →
        ``(N, n_slots, F, frames)``.
    """

    architecture = "AudioSlots"

    def __init__(
        self,
        n_slots: int = 2,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop: int = 125,
        power: float = 0.3,
        chunk_seconds: float = 0.5,
        channels: tuple[int, ...] = (64, 128, 256),
        dim: int = 256,
        heads: int = 4,
        n_layers: int = 4,
        decoder_hidden: int = 256,
        decoder_layers: int = 3,
        n_fourier: int = 8,
        mask: str = "wiener",
        train_masked: bool = False,
        carry: bool = False,
        queries: str = "detr",
        token_norm: bool = True,
    ):
        super().__init__()
        if mask not in ("wiener", "ibm", "none"):
            raise ValueError(f"mask must be 'wiener', 'ibm' or 'none', got {mask!r}")
        if queries not in ("detr", "initial"):
            raise ValueError(f"queries must be 'detr' or 'initial', got {queries!r}")
        self.queries = queries
        self.n_src = n_slots
        self.sample_rate, self.n_fft, self.hop, self.power = sample_rate, n_fft, hop, power
        self.chunk = int(round(chunk_seconds * sample_rate))
        self.mask, self.n_fourier, self.train_masked = mask, n_fourier, train_masked
        self.carry, self.chunk_seconds = carry, chunk_seconds
        stages, prev = [], channels[0]
        self.stem = nn.Sequential(nn.Conv2d(1, prev, 3, 1, 1), nn.ReLU())
        for c in channels:
            stages.append(_ResBlock(prev, c, 2))
            prev = c
        self.encoder = nn.Sequential(*stages)
        n_pos = 4 * n_fourier + 2
        self.token_proj = nn.Linear(prev, dim)
        self.token_pos = nn.Linear(n_pos, dim)
        self.token_norm = nn.LayerNorm(dim) if token_norm else nn.Identity()
        self.slots = nn.Parameter(torch.randn(n_slots, dim) * dim**-0.5)  # learned queries
        # DETR's slots start at 0 (unless carried in from the previous clip)
        from_zero = queries == "detr" and not carry
        self.layers = nn.ModuleList(
            SlotDecoderLayer(dim, heads, 4 * dim, from_zero=from_zero and i == 0)
            for i in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.dec_slot = nn.Linear(dim, decoder_hidden)
        self.dec_pos = nn.Linear(n_pos, decoder_hidden, bias=False)
        mlp = []
        for _ in range(decoder_layers - 2):
            mlp += [nn.ReLU(), nn.Linear(decoder_hidden, decoder_hidden)]
        self.dec_mlp = nn.Sequential(*mlp, nn.ReLU(), nn.Linear(decoder_hidden, 1))
        # SAVi's predictor: slot self-attention and an MLP, residual (the identity at start)
        self.predictor = (
            nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
            )
            if carry
            else None
        )
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.real_stft = None  # use_real_stft(): the exported graphs' path (capabilities.py)

    @property
    def export_chunk(self) -> int | None:
        """Exported graphs separate one clip of this many samples (the caller cuts and joins
        clips); the carry variant would need its slots as a graph input and output: ``None``."""
        return None if self.carry else self.chunk

    def export_form(self) -> list[str]:
        if self.carry:
            raise ExportRefused(
                "AudioSlots with carry: true does not export yet: its graph would need the "
                "carried slots as a second input and output; the independent-clip AudioSlots "
                "exports"
            )
        return []

    def _slots(self, mag: Tensor, queries: Tensor | None) -> tuple[Tensor, Tensor]:
        n, _, f, t = mag.shape
        x = self.encoder(self.stem(mag))  # (N, C', F', T')
        gf, gt = x.shape[-2:]
        tokens = self.token_proj(x.flatten(2).transpose(1, 2))  # (N, F'T', D)
        tokens = tokens + self.token_pos(fourier_features(gf, gt, self.n_fourier, mag.device))
        tokens = self.token_norm(tokens)
        # a copy, not a view: a no-grad view of a parameter still "requires grad", which
        # torch's FLOP counter trips on
        learned = self.slots.repeat(n, 1, 1)  # (N, K, D)
        if self.queries == "detr":  # slots from 0 (or carried), the queries at every layer
            slots, pos = (torch.zeros_like(learned) if queries is None else queries), learned
        else:  # the queries (or carried slots) as the initial slots only
            slots, pos = (learned if queries is None else queries), 0.0
        for layer in self.layers:
            slots = layer(slots, pos, tokens)
        slots = self.final_norm(slots)  # (N, K, D)
        pos = self.dec_pos(fourier_features(f, t, self.n_fourier, mag.device))  # (F*T, H)
        h = self.dec_slot(slots)[:, :, None, :] + pos  # spatial broadcast: (N, K, F*T, H)
        out = F.softplus(self.dec_mlp(h)).squeeze(-1)  # (N, K, F*T), non-negative
        return out.reshape(n, -1, f, t), slots

    def slot_spectrograms(self, mag: Tensor, queries: Tensor | None = None) -> Tensor:
        """Compressed mixture magnitudes ``(N, 1, F, frames)`` → one per slot; ``queries``
        ``(N, K, D)`` replace the learned slot queries (carried slots)."""
        return self._slots(mag, queries)[0]

    def _separate(self, x: Tensor, queries: Tensor | None = None) -> Tensor:
        return self._separate_with_slots(x, queries)[0]

    def _separate_with_slots(self, x: Tensor, queries: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(N, 1, t)`` → ``(N, K, 1, t)`` for one clip (or a whole training segment), and the
        slots ``(N, K, D)``."""
        wav = x[:, 0]
        if self.real_stft is not None and not self.training:  # exported graphs: real tensors
            return self._separate_real(wav, queries)
        spec = self._stft(wav)
        comp = (spec.abs() + 1e-8) ** self.power  # (N, F, frames)
        comp_est, slots = self._slots(comp[:, None], queries)
        est_mag = comp_est ** (1 / self.power)  # (N, K, F, frames)
        return self._synthesise(spec, est_mag, torch.angle(spec)[:, None], wav.shape[-1]), slots

    def _separate_real(self, wav: Tensor, queries: Tensor | None) -> tuple[Tensor, Tensor]:
        """:meth:`_separate_with_slots` at inference with the STFT's real and imaginary parts
        as two real tensors (:class:`zoo.dsp.RealSTFT`), for ONNX."""
        real, imag = self.real_stft.stft(wav)  # (N, F, frames) each
        mag = (real.square() + imag.square()).sqrt()
        comp_est, slots = self._slots(((mag + 1e-8) ** self.power)[:, None], queries)
        est_mag = comp_est ** (1 / self.power)  # (N, K, F, frames)
        if self.mask == "none":  # the magnitudes with the mixture phase: |est| * spec / |spec|
            gain = est_mag / mag[:, None].clamp_min(1e-12)
        else:
            gain = self._masks(est_mag, self.mask)
        re, im = (part[:, None] * gain for part in (real, imag))
        n, k, f, frames = re.shape
        out = self.real_stft.istft(
            re.reshape(-1, f, frames), im.reshape(-1, f, frames), wav.shape[-1]
        )
        return out.reshape(n, k, 1, -1), slots

    @staticmethod
    def _masks(est_mag: Tensor, mode: str) -> Tensor:
        """Masks ``(N, K, F, frames)`` from slot magnitudes: binary (``ibm``) or Wiener-like."""
        if mode == "ibm":
            masks = F.one_hot(est_mag.argmax(1), est_mag.shape[1]).movedim(-1, 1)
            return masks.to(est_mag.dtype)
        pw = est_mag.square()
        return pw / pw.sum(1, keepdim=True).clamp_min(1e-12)

    def _stft(self, wav: Tensor) -> Tensor:
        return torch.stft(wav, self.n_fft, self.hop, window=self.window, return_complex=True)

    def _synthesise(self, spec: Tensor, est_mag: Tensor, phase: Tensor, length: int) -> Tensor:
        """Waveforms ``(N, K, 1, length)`` from slot magnitudes ``est_mag`` ``(N, K, F, frames)``:
        masks on the mixture STFT ``spec`` ``(N, F, frames)`` (Wiener-like or binary), or, in
        generative training, the magnitudes themselves with ``phase``."""
        mode = ("wiener" if self.train_masked else "none") if self.training else self.mask
        if mode == "none":
            est = torch.polar(est_mag, phase.expand_as(est_mag))
        else:
            est = spec[:, None] * self._masks(est_mag, mode)
        out = torch.istft(
            est.flatten(0, 1), self.n_fft, self.hop, window=self.window, length=length
        )
        return out.reshape(spec.shape[0], -1, 1, length)

    def _carried_clips(self, x: Tensor):
        """Clip by clip with the slots carried: yields ``(N, K, 1, chunk)`` per clip."""
        slots = None
        for _, _, piece in iter_chunks(x, self.chunk):
            queries = None if slots is None else self.predictor(slots)
            est, slots = self._separate_with_slots(piece, queries)
            yield est

    @property
    def test_chunk(self) -> int:
        return self.chunk

    @property
    def test_protocol(self) -> dict:
        stitch = (
            "slots carried from clip to clip, clips joined in slot order"
            if self.carry
            else "half-overlapping clips, slots aligned to the previous clip's on the overlap"
        )
        return {"chunk_seconds": self.chunk_seconds, "stitch": stitch, "mask": self.mask}

    def separate_chunks(self, mix: Tensor):
        """Outputs ``(B, K, C, chunk)`` of consecutive non-overlapping clips: independent, or
        with the slots carried (``carry``)."""
        b, c, _ = mix.shape
        x = mix.reshape(b * c, 1, -1)
        clips = (
            self._carried_clips(x)
            if self.carry
            else (self._separate(p) for _, _, p in iter_chunks(x, self.chunk))
        )
        for est in clips:
            yield est.reshape(b, c, -1, self.chunk).transpose(1, 2)

    def forward(self, mix: Tensor) -> Tensor:
        if mix.ndim != 3:
            raise ValueError(f"AudioSlots expects (batch, channels, time), got {tuple(mix.shape)}")
        b, c, t = mix.shape
        x = mix.reshape(b * c, 1, t)
        if self.carry and self.training and t <= self.chunk:
            raise ValueError(
                f"AudioSlots(carry=True) learns to carry slots on training segments of several "
                f"clips, got {t} samples for clips of {self.chunk}: set data.init_args.segment "
                f"to a multiple of chunk_seconds={self.chunk_seconds} (e.g. 4 clips)"
            )
        if self.carry and t > self.chunk:  # clip by clip, in training too (multi-clip segments)
            est = join_chunks(self._carried_clips(x), t)
        elif self.training or t <= self.chunk:
            est = self._separate(x)
        else:
            est = separate_chunked(self._separate, x, self.chunk, overlap=0.5, align="residual")
        return est.reshape(b, c, -1, t).transpose(1, 2)  # (B, K, C, T)


class AudioSlotsAutoencoder(NeedsSources, AudioSlots):
    """The AudioSlots paper's autoencoder reference row (Table 1): the same network with one slot,
    reconstructing each true source from that source alone; at test its outputs, one per source,
    become the masks on each clip's mixture STFT. It reads the references, so its results are an
    oracle protocol (``needs_sources``), the bound that AudioSlots' separation is compared with.

    Args:
        n_src: number of sources (outputs, in the references' order).
        **kwargs: as :class:`AudioSlots` (``n_slots`` and ``carry`` excepted).

    Shape:
        ``forward(mix, sources)``: ``(B, C, T)``, ``(B, n_src, C, T)`` → ``(B, n_src, C, T)``.
    """

    def __init__(
        self,
        n_src: int = 2,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop: int = 125,
        power: float = 0.3,
        chunk_seconds: float = 0.5,
        channels: tuple[int, ...] = (64, 128, 256),
        dim: int = 256,
        heads: int = 4,
        n_layers: int = 4,
        decoder_hidden: int = 256,
        decoder_layers: int = 3,
        n_fourier: int = 8,
        mask: str = "wiener",
        train_masked: bool = False,
        queries: str = "detr",
        token_norm: bool = True,
    ):
        super().__init__(
            1, sample_rate, n_fft, hop, power, chunk_seconds, channels, dim, heads, n_layers,
            decoder_hidden, decoder_layers, n_fourier, mask, train_masked, queries=queries,
            token_norm=token_norm,
        )  # fmt: skip
        self.n_src = n_src

    @property
    def architecture(self) -> str:
        return "AudioSlots autoencoder (oracle)"

    @property
    def test_chunk(self) -> None:
        return None  # outputs come in the references' order: nothing to stitch

    @property
    def test_protocol(self) -> dict:
        return {
            "chunk_seconds": self.chunk_seconds,
            "stitch": "outputs in the references' order (each is encoded from its own source)",
            "mask": self.mask,
        }

    def _clip(self, mix: Tensor, sources: Tensor) -> Tensor:
        b, s, c, t = sources.shape
        src = self._stft(sources.reshape(-1, t))  # (B*S*C, F, frames)
        comp = (src.abs() + 1e-8) ** self.power
        mag = self.slot_spectrograms(comp[:, None])[:, 0] ** (1 / self.power)
        mag = mag.reshape(b, s, c, *mag.shape[-2:]).transpose(1, 2).flatten(0, 1)  # (B*C, S, F, N)
        phase = torch.angle(src).reshape(b, s, c, *src.shape[-2:]).transpose(1, 2).flatten(0, 1)
        est = self._synthesise(self._stft(mix.reshape(-1, t)), mag, phase, t)  # (B*C, S, 1, t)
        return est.reshape(b, c, s, t).transpose(1, 2)

    def forward(self, mix: Tensor, sources: Tensor | None = None) -> Tensor:
        if sources is None:
            raise ValueError(
                "AudioSlotsAutoencoder encodes the true sources: forward(mix, sources) (it is an "
                "oracle reference row, not a separator)"
            )
        t = mix.shape[-1]
        if self.training or t <= self.chunk:
            return self._clip(mix, sources)
        clips = zip(iter_chunks(mix, self.chunk), iter_chunks(sources, self.chunk), strict=True)
        return join_chunks((self._clip(m, s) for (_, _, m), (_, _, s) in clips), t)
