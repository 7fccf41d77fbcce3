"""Oracle baselines: time-frequency masks computed from the true sources (not trained).

They are the leaderboard's reference rows: what masking the mixture's STFT can reach when the
sources are known. Kinds: ``ibm`` (ideal binary mask: each bin to the loudest source), ``irm``
(ideal ratio mask ``|S_j| / Σ_k |S_k|``), ``wiener`` (Wiener-like ``|S_j|² / Σ_k |S_k|²``) and
``mixture`` (the mixture itself as every estimate). Masks use every component of the mixture in
the denominator (the noise too for noisy tasks), and are applied to the mixture's STFT with its
phase. STFT: Hann window of ``n_fft`` samples, hop ``hop``. With ``chunk_seconds`` the masks
are computed and applied clip by clip on non-overlapping zero-padded clips joined end to end:
the true sources through the lossy chunked pipeline of AudioSlots (its paper's oracle row).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dsp import stft
from ..inference import iter_chunks, join_chunks
from .base import Backbone
from .capabilities import NeedsSources, TestProtocol

__all__ = ["OracleMask", "oracle_estimates", "KINDS"]

KINDS = ("ibm", "irm", "wiener", "mixture")


def oracle_estimates(
    mix: Tensor,
    sources: Tensor,
    kind: str = "irm",
    n_fft: int = 256,
    hop: int = 64,
    residual: bool = True,
) -> Tensor:
    """Masked-mixture estimates of ``sources``.

    Shape:
        mix ``(B, C, T)``, sources ``(B, S, C, T)`` → ``(B, S, C, T)``.

    Args:
        residual: add ``mix - Σ sources`` (e.g. noise) as one more component of the denominator.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown oracle {kind!r}: choose one of {KINDS}")
    if kind == "mixture":
        return mix.unsqueeze(1).expand_as(sources).clone()
    b, s, c, t = sources.shape
    comps = sources
    if residual:
        comps = torch.cat([sources, (mix - sources.sum(1)).unsqueeze(1)], 1)  # (B, S+1, C, T)
    window = torch.hann_window(n_fft, device=mix.device, dtype=mix.dtype)
    mag = stft(comps, n_fft, hop, window).abs()  # (B, K, C, F, N)
    if kind == "ibm":
        masks = torch.nn.functional.one_hot(mag.argmax(1), mag.shape[1]).movedim(-1, 1)
        masks = masks.to(mix.dtype)
    elif kind == "irm":
        masks = mag / mag.sum(1, keepdim=True).clamp_min(1e-8)
    else:
        power = mag**2
        masks = power / power.sum(1, keepdim=True).clamp_min(1e-8)
    spec = stft(mix, n_fft, hop, window).unsqueeze(1) * masks[:, :s]  # (B, S, C, F, N)
    flat = spec.reshape(-1, *spec.shape[-2:])
    est = torch.istft(flat, n_fft, hop, window=window, length=t)
    return est.reshape(b, s, c, t)


class OracleMask(Backbone, NeedsSources, TestProtocol):
    """An oracle "separator": needs the true sources (``forward(mix, sources)``), not trained.

    Args:
        kind: ``ibm``, ``irm``, ``wiener`` or ``mixture``.
        sample_rate: the rate it is scored at (the recipe's data follow it).
        n_src: number of sources.
        n_fft, hop: STFT of the masks (Hann window).
        sources: target names (music: scored per target); ``None``: anonymous.
        chunk_seconds: mask clip by clip (non-overlapping clips of this length); ``None``: the
            whole input at once.
    """

    def __init__(
        self,
        kind: str = "irm",
        sample_rate: int = 8000,
        n_src: int = 2,
        n_fft: int = 256,
        hop: int = 64,
        sources: list[str] | None = None,
        chunk_seconds: float | None = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown oracle {kind!r}: choose one of {KINDS}")
        self.kind, self.sample_rate, self.n_src, self.n_fft, self.hop = (
            kind,
            sample_rate,
            n_src,
            n_fft,
            hop,
        )
        self.sources = list(sources) if sources else None
        if self.sources is not None and len(self.sources) != n_src:
            raise ValueError(f"sources {self.sources} must name all n_src={n_src} outputs")
        self.chunk_seconds = chunk_seconds
        self.chunk = int(round(chunk_seconds * sample_rate)) if chunk_seconds else None
        if self.chunk is not None and self.chunk < n_fft:
            raise ValueError(
                f"chunk_seconds={chunk_seconds} is {self.chunk} samples, shorter than n_fft={n_fft}"
            )
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    @property
    def architecture(self) -> str:
        name = f"oracle {self.kind.upper() if self.kind != 'mixture' else 'mixture'}"
        return f"{name}, {self.chunk_seconds:g} s clips" if self.chunk else name

    @property
    def test_protocol(self) -> dict:
        return {"chunk_seconds": self.chunk_seconds} if self.chunk else {}

    def forward(self, mix: Tensor, sources: Tensor | None = None) -> Tensor:
        if sources is None:
            raise ValueError("an oracle mask needs the true sources")
        if self.chunk is None or mix.shape[-1] <= self.chunk:
            return oracle_estimates(mix, sources, self.kind, self.n_fft, self.hop)
        clips = zip(iter_chunks(mix, self.chunk), iter_chunks(sources, self.chunk), strict=True)
        return join_chunks(
            (
                oracle_estimates(m, s, self.kind, self.n_fft, self.hop)
                for (_, _, m), (_, _, s) in clips
            ),
            mix.shape[-1],
        )
