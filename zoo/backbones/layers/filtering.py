"""Open-Unmix's post-processing, kept apart from the network as the ``openunmix`` package keeps
``filtering.py`` apart from ``model.py``: complex source STFTs from magnitude estimates (ratio
masks with the mixture phase, or soft masks) refined by the multichannel Wiener EM."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expectation_maximization", "invert_small", "wiener"]


def invert_small(m: Tensor) -> Tensor:
    """Inverse of ``(..., C, C)`` complex matrices; closed form for C <= 2 (the stereo case),
    which is exact and avoids the batched-inverse bug on this CPU for large batches."""
    c = m.shape[-1]
    if c == 1:
        return 1 / m
    if c == 2:
        a, b, cc, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
        det = a * d - b * cc
        return (
            torch.stack([torch.stack([d, -b], -1), torch.stack([-cc, a], -1)], -2)
            / det[..., None, None]
        )
    return torch.linalg.inv(m)


def expectation_maximization(y: Tensor, x: Tensor, iterations: int, eps: float = 1e-10) -> Tensor:
    """Refine source STFTs with the multichannel Wiener EM of Open-Unmix's post-processing
    (Nugraha, Liutkus & Vincent 2016; the simplified updates of Liutkus et al. 2014).

    Each iteration re-estimates every source's power spectral density ``v_j(t, f)`` (mean power
    over channels) and spatial covariance ``R_j(f) = Σ_t y_j y_jᴴ / (eps + Σ_t v_j)``, then filters
    the mixture: ``y_j = v_j R_j (sqrt(eps) I + Σ_k v_k R_k)⁻¹ x``.

    Shape:
        y ``(frames, F, C, S)`` complex initial estimates, x ``(frames, F, C)`` complex mixture
        → ``(frames, F, C, S)``.
    """
    c = x.shape[-1]
    reg = (eps**0.5) * torch.eye(c, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        v = y.abs().square().mean(-2)  # (frames, F, S)
        cov = torch.einsum("tfis,tfjs->fijs", y, y.conj())  # (F, C, C, S)
        r = cov / (eps + v.sum(0))[:, None, None, :]
        mix_cov = torch.einsum("tfs,fijs->tfij", v.to(r.dtype), r) + reg  # (frames, F, C, C)
        inv = invert_small(mix_cov)
        gain = torch.einsum("fijs,tfjk->tfiks", r, inv) * v[:, :, None, None, :]
        y = torch.einsum("tfiks,tfk->tfis", gain, x)
    return y


def wiener(
    target_mags: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
) -> Tensor:
    """Complex source STFTs from magnitude estimates, as Open-Unmix's separator builds them.

    Initial estimates: the target magnitudes with the mixture phase (``softmask=False``) or the
    mixture times each target's share of the summed magnitudes (``softmask=True``); optionally a
    residual source (mixture minus the targets); then ``iterations`` EM steps
    (:func:`expectation_maximization`) on the mixture scaled so that its peak magnitude is at most
    ``scale_factor``. ``iterations=0`` gives plain ratio masking.

    Shape:
        target_mags ``(frames, F, C, S)``, mix_stft ``(frames, F, C)`` complex →
        ``(frames, F, C, S')`` complex, ``S' = S + residual``.
    """
    if softmask:
        share = target_mags / (eps + target_mags.sum(-1, keepdim=True))
        y = mix_stft[..., None] * share
    else:
        y = torch.polar(target_mags, torch.angle(mix_stft)[..., None].expand_as(target_mags))
    if residual:
        y = torch.cat([y, mix_stft[..., None] - y.sum(-1, keepdim=True)], -1)
    if iterations == 0:
        return y
    peak = torch.clamp(mix_stft.abs().max() / scale_factor, min=1.0)
    return expectation_maximization(y / peak, mix_stft / peak, iterations, eps) * peak
