"""Pairwise signal losses computed from inner-product statistics.

Every signal loss here is a function of three inner products only: the energy of the estimate
``<ŝ, ŝ>``, the energy of the reference ``<s, s>`` and their cross term ``<ŝ, s>``. That one fact is
what lets every objective share a single code path:

* PIT and Hungarian matching evaluate the loss for all ``(estimate, reference)`` pairs from an
  ``(B, n_est, n_ref)`` cross-product matrix, never materialising ``(B, n_est, n_ref, T)`` tensors
  as Asteroid's ``PairwiseNegSDR`` does (measured faster in ``benchmarks/``);
* MixIT evaluates the loss of *every remix* ``Σ_m a_m ŝ_m`` from the Gram matrix of the estimates,
  since ``<Aŝ, Aŝ> = aᵀGa`` and ``<Aŝ, x> = aᵀc``, without building the 2^M remixes.

The inner products are accumulated in float64 by default (``double=True``) so that the energy of
the error ``‖ŝ‖² - 2<ŝ,s> + ‖s‖²`` keeps its precision even at high SNR, where a float32
difference of large numbers would cancel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..dsp import stft

__all__ = [
    "Stats",
    "PairwiseLoss",
    "NegSISDR",
    "ThresholdedSNR",
    "PairwiseMSE",
    "PairwiseL1",
    "check_same_trailing_shape",
]


def check_same_trailing_shape(est: Tensor, ref: Tensor, what: str = "loss") -> None:
    """Raise a ValueError naming both shapes unless ``est`` and ``ref`` are ``(B, n, *)`` alike."""
    if est.ndim < 3 or ref.ndim < 3:
        raise ValueError(
            f"{what}: expected estimates and references shaped (batch, n_sources, ..., time), "
            f"got estimates {tuple(est.shape)} and references {tuple(ref.shape)}"
        )
    if est.shape[0] != ref.shape[0] or est.shape[2:] != ref.shape[2:]:
        raise ValueError(
            f"{what}: estimates {tuple(est.shape)} and references {tuple(ref.shape)} must agree "
            "in batch size and in every dimension after the source axis"
        )


@dataclass
class Stats:
    """Inner products between estimates and references, all flattened over channels and time.

    Attributes:
        est_energy: ``(B, n_est)`` ``<ŝ_i, ŝ_i>``.
        ref_energy: ``(B, n_ref)`` ``<s_j, s_j>``.
        cross: ``(B, n_est, n_ref)`` ``<ŝ_i, s_j>``.
        gram: ``(B, n_est, n_est)`` ``<ŝ_i, ŝ_k>`` (only when asked for).
        numel: number of samples per signal (channels × time).
    """

    est_energy: Tensor
    ref_energy: Tensor
    cross: Tensor
    gram: Tensor | None
    numel: int


class PairwiseLoss(nn.Module):
    """Base class: a signal loss (lower is better) defined from inner products.

    Subclasses implement :meth:`from_stats`. Calling the module returns the pairwise matrix.

    Args:
        zero_mean: remove the mean of every signal first (along the last axis).
        double: accumulate inner products in float64.

    Shape:
        - est: ``(B, n_est, *)``, ref: ``(B, n_ref, *)`` with the same trailing dimensions.
        - output: ``(B, n_est, n_ref)``.
    """

    zero_mean_default = False

    def __init__(self, zero_mean: bool | None = None, double: bool = True):
        super().__init__()
        self.zero_mean = self.zero_mean_default if zero_mean is None else zero_mean
        self.double = double

    # -- statistics -------------------------------------------------------------------------
    def _prepare(self, x: Tensor) -> Tensor:
        x = x.flatten(2)  # (B, n, C*T)
        if self.double:
            x = x.double()
        if self.zero_mean:
            x = x - x.mean(dim=-1, keepdim=True)
        return x

    def stats(self, est: Tensor, ref: Tensor, gram: bool = False) -> Stats:
        """Inner products of ``est`` ``(B, n_est, *)`` and ``ref`` ``(B, n_ref, *)``."""
        check_same_trailing_shape(est, ref, type(self).__name__)
        e, r = self._prepare(est), self._prepare(ref)
        cross = torch.bmm(e, r.transpose(1, 2))  # (B, n_est, n_ref)
        ref_energy = (r * r).sum(-1)  # (B, n_ref)
        if gram:
            g = torch.bmm(e, e.transpose(1, 2))  # (B, n_est, n_est)
            est_energy = torch.diagonal(g, dim1=1, dim2=2)
        else:
            g = None
            est_energy = (e * e).sum(-1)  # (B, n_est)
        return Stats(est_energy, ref_energy, cross, g, e.shape[-1])

    # -- the loss ---------------------------------------------------------------------------
    def from_stats(
        self, est_energy: Tensor, ref_energy: Tensor, cross: Tensor, numel: int
    ) -> Tensor:
        """Elementwise loss from broadcastable ``<ŝ,ŝ>``, ``<s,s>`` and ``<ŝ,s>`` tensors."""
        raise NotImplementedError

    def silence(self, est_energy: Tensor, numel: int) -> Tensor:
        """Loss of estimates whose reference is silent (used to push unmatched slots to zero)."""
        return 10 * torch.log10(est_energy / numel + 1e-8)

    def forward(self, est: Tensor, ref: Tensor) -> Tensor:
        st = self.stats(est, ref)
        out = self.from_stats(
            st.est_energy[:, :, None], st.ref_energy[:, None, :], st.cross, st.numel
        )
        return out.to(est.dtype)


class NegSISDR(PairwiseLoss):
    """Negative scale-invariant SDR in dB (Le Roux et al. 2019), Asteroid's ``pairwise_neg_sisdr``.

    ``SI-SDR = 10 log10(‖αs‖² / ‖ŝ - αs‖²)`` with ``α = <ŝ,s>/‖s‖²``; the same ``eps`` placement as
    Asteroid (1e-8 on the target energy, the noise energy and inside the log) so that values agree.
    Signals are zero-mean by default.
    """

    zero_mean_default = True

    def __init__(self, zero_mean: bool | None = None, double: bool = True, eps: float = 1e-8):
        super().__init__(zero_mean, double)
        self.eps = eps

    def from_stats(self, est_energy, ref_energy, cross, numel):
        alpha = cross / (ref_energy + self.eps)
        proj = alpha * alpha * ref_energy  # ‖αs‖²
        noise = (est_energy - 2 * alpha * cross + proj).clamp_min(0)  # ‖ŝ - αs‖²
        return -10 * torch.log10(proj / (noise + self.eps) + self.eps)


class ThresholdedSNR(PairwiseLoss):
    """The MixIT paper's loss: ``10 log10(‖s - ŝ‖² + τ‖s‖²)``, ``τ = 10^(-SNRmax/10)``.

    Wisdom et al. 2020, eq. (2). It equals ``-SNR_τ(s, ŝ) + 10 log10 ‖s‖²``: the negative SNR, soft
    thresholded at ``snr_max`` dB, plus a per-reference constant that changes neither gradients nor
    assignments. ``normalize=True`` drops that constant and returns ``-SNR_τ`` itself. A silent
    reference gives ``10 log10(‖ŝ‖² + eps)``: finite, and pushes the estimate to silence.

    Args:
        snr_max: soft SNR threshold in dB (30 in the paper).
        normalize: subtract ``10 log10 ‖s‖²`` to report a true negative SNR.
        eps: added inside the log (1e-8, as in the authors' code).
    """

    def __init__(
        self,
        snr_max: float = 30.0,
        normalize: bool = False,
        zero_mean: bool | None = None,
        double: bool = True,
        eps: float = 1e-8,
    ):
        super().__init__(zero_mean, double)
        self.snr_max = snr_max
        self.tau = 10 ** (-snr_max / 10)
        self.normalize = normalize
        self.eps = eps

    def from_stats(self, est_energy, ref_energy, cross, numel):
        err = (est_energy - 2 * cross + ref_energy).clamp_min(0)  # ‖s - ŝ‖²
        out = 10 * torch.log10(err + self.tau * ref_energy + self.eps)
        if self.normalize:
            out = out - 10 * torch.log10(ref_energy + self.eps)
        return out

    def silence(self, est_energy, numel):
        return 10 * torch.log10(est_energy + self.eps)


class PairwiseMSE(PairwiseLoss):
    """Mean squared error ``‖ŝ - s‖² / numel`` (Asteroid's ``pairwise_mse``); for spectrograms."""

    def from_stats(self, est_energy, ref_energy, cross, numel):
        return (est_energy - 2 * cross + ref_energy).clamp_min(0) / numel

    def silence(self, est_energy, numel):
        return est_energy / numel


class PairwiseL1(nn.Module):
    """Pairwise mean absolute difference of the waveforms (Demucs' training loss).

    Not an inner-product loss, so it serves PIT and fixed-order matching only.

    Shape:
        est ``(B, n_est, *, T)``, ref ``(B, n_ref, *, T)`` → ``(B, n_est, n_ref)``.
    """

    def forward(self, est: Tensor, ref: Tensor) -> Tensor:
        check_same_trailing_shape(est, ref, type(self).__name__)
        e, r = est.flatten(2), ref.flatten(2)
        return torch.cdist(e, r, p=1) / e.shape[-1]


class PairwiseSpectralL1(nn.Module):
    """Pairwise L1 distance between STFT magnitudes (Jansson et al. 2017's loss, on waveforms).

    Not an inner-product loss, so it serves PIT only (Hungarian matching and MixIT need
    ``PairwiseLoss.stats``).

    Args:
        n_fft, hop: STFT window and hop (Hann window).

    Shape:
        est ``(B, n_est, *, T)``, ref ``(B, n_ref, *, T)`` → ``(B, n_est, n_ref)``.
    """

    def __init__(self, n_fft: int = 256, hop: int = 64):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _mag(self, x: Tensor) -> Tensor:
        mag = stft(x, self.n_fft, self.hop, self.window).abs()
        return mag.flatten(2)  # (B, n, C*F*frames)

    def forward(self, est: Tensor, ref: Tensor) -> Tensor:
        check_same_trailing_shape(est, ref, type(self).__name__)
        e, r = self._mag(est), self._mag(ref)
        return torch.cdist(e, r, p=1) / e.shape[-1]  # (B, n_est, n_ref) mean absolute difference


class PairwiseSpectralMSE(PairwiseMSE):
    """Pairwise mean squared difference between (compressed) STFT magnitudes, from inner
    products of the magnitude features, so it serves every solver (PIT, Hungarian, MixIT).

    Open-Unmix's training loss with ``power=1`` (magnitudes); AudioSlots' with ``power=0.3``
    (``|X|^0.3``). Estimates are re-analysed with this STFT (Hann window).

    Args:
        n_fft, hop: STFT window and hop.
        power: magnitude compression exponent.

    Shape:
        est ``(B, n_est, *, T)``, ref ``(B, n_ref, *, T)`` → ``(B, n_est, n_ref)``.
    """

    def __init__(self, n_fft: int = 4096, hop: int = 1024, power: float = 1.0):
        super().__init__()
        self.n_fft, self.hop, self.power = n_fft, hop, power
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _prepare(self, x: Tensor) -> Tensor:
        mag = stft(x, self.n_fft, self.hop, self.window).abs()
        if self.power != 1.0:
            mag = (mag + 1e-8) ** self.power  # eps: finite gradient at silent bins
        return super()._prepare(mag)  # flattened to (B, n, C*F*frames)
