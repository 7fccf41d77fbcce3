"""Mixture invariant training (Wisdom et al. 2020) without materialising the remixes.

For estimates ``ŝ`` ``(M, T)`` and a binary mixing vector ``a`` (which estimates form a remix),
``<aᵀŝ, aᵀŝ> = aᵀGa`` and ``<aᵀŝ, x> = aᵀc`` with ``G = ŝŝᵀ`` the ``(M, M)`` Gram matrix and
``c = ŝx`` the ``(M,)`` inner products with the reference mixture. So the loss of every one of the
``n_mix^M`` assignments is a few small matrix products on ``(M, M)`` statistics, computed once in
``O(M² T)``. Asteroid's ``MixITLossWrapper`` instead sums the waveforms and runs the
signal loss once per assignment, ``O(2^M M T)`` with a Python loop (see ``benchmarks/``).

The search runs without autograd; the loss of the winning assignment is then recomputed from the
same statistics with autograd, which gives exactly the gradient of the minimum.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from .signal import PairwiseLoss, ThresholdedSNR, check_same_trailing_shape

__all__ = ["MixITLoss", "all_assignments"]

MAX_ASSIGNMENTS = 2**20


@lru_cache(maxsize=16)
def all_assignments(n_est: int, n_mix: int) -> Tensor:
    """Every map of ``n_est`` estimates to ``n_mix`` mixtures, ``(n_mix^n_est, n_est)`` long.

    Row ``k`` writes ``k`` in base ``n_mix``, most significant digit first: ``[k // n_mix^(M-1),
    ..., k % n_mix]`` is the mixture index of each estimate.
    """
    k = torch.arange(n_mix**n_est, dtype=torch.long)
    powers = n_mix ** torch.arange(n_est - 1, -1, -1, dtype=torch.long)
    return (k[:, None] // powers[None, :]) % n_mix


@lru_cache(maxsize=16)
def _float_assignments(n_est: int, device: str) -> Tensor:
    return all_assignments(n_est, 2).to(device=device, dtype=torch.float32)


class MixITLoss(nn.Module):
    """MixIT: the best assignment of ``M`` estimates to the reference mixtures.

    The loss of an assignment is the mean over mixtures of ``signal_loss(remix_j, mixture_j)``
    where ``remix_j`` sums the estimates assigned to mixture ``j``; every estimate goes to exactly
    one mixture and a mixture may receive none (Asteroid's ``generalized=True``). The batch loss is
    the mean over items of the best assignment's loss.

    Args:
        signal_loss: pairwise signal loss (default: the paper's thresholded SNR at 30 dB).

    Shape:
        - est: ``(B, M, *)``; mixtures: ``(B, n_mix, *)`` (n_mix = 2 in the paper).
        - ``info["mixing"]``: ``(B, n_mix, M)`` binary matrix ``A`` so that ``A @ est`` are the
          remixes; ``info["assignment"]``: ``(B, M)`` mixture index of each estimate;
          ``info["per_item"]``: ``(B,)``.
    """

    def __init__(self, signal_loss: PairwiseLoss | None = None):
        super().__init__()
        self.signal_loss = signal_loss if signal_loss is not None else ThresholdedSNR()

    def forward(self, est: Tensor, mixtures: Tensor):
        check_same_trailing_shape(est, mixtures, "MixITLoss")
        n_est, n_mix = est.shape[1], mixtures.shape[1]
        if n_mix**n_est > MAX_ASSIGNMENTS:
            raise ValueError(
                f"MixITLoss: {n_mix}^{n_est} assignments of estimates {tuple(est.shape)} to "
                f"mixtures {tuple(mixtures.shape)} is more than {MAX_ASSIGNMENTS}"
            )
        st = self.signal_loss.stats(est, mixtures, gram=True)
        best = self._search(st, n_est, n_mix)  # (B,) index of the best assignment
        assignment = all_assignments(n_est, n_mix).to(est.device)[best]  # (B, M)
        mixing = torch.nn.functional.one_hot(assignment, n_mix).transpose(1, 2)  # (B, n_mix, M)
        a = mixing.to(st.gram.dtype)
        remix_energy = torch.einsum("bjm,bmn,bjn->bj", a, st.gram, a)  # (B, n_mix)
        remix_cross = torch.einsum("bjm,bmj->bj", a, st.cross)  # (B, n_mix)
        per_item = self.signal_loss.from_stats(remix_energy, st.ref_energy, remix_cross, st.numel)
        per_item = per_item.mean(-1).to(est.dtype)  # (B,)
        return per_item.mean(), {
            "mixing": mixing.to(est.dtype),
            "assignment": assignment,
            "per_item": per_item,
        }

    @torch.no_grad()
    def _search(self, st, n_est: int, n_mix: int) -> Tensor:
        # The search runs in float32 (2x faster than float64 here); ties closer than float32
        # rounding are irrelevant because the chosen assignment's loss is recomputed exactly.
        assign = all_assignments(n_est, n_mix).to(st.gram.device)  # (K, M)
        gram, cross = st.gram.float(), st.cross.float()  # (B, M, M), (B, M, n_mix)
        ref_energy = st.ref_energy.float()
        total = 0.0
        if n_mix == 2:
            # a_1 = b, a_0 = 1 - b, so one quadratic form bᵀGb serves both mixtures. Split b into
            # its high and low halves (the row order of all_assignments): every (B, 2^M) term is
            # an outer sum of (B, 2^(M/2)) terms, plus bₕᵀG_hl b_l as one small batched matmul.
            # This costs O(B 2^M) instead of O(B 2^M M²) for the direct (K, M) @ (M, M) product.
            m_hi = n_est // 2
            bh = _float_assignments(m_hi, str(gram.device))  # (Kh, Mh)
            bl = _float_assignments(n_est - m_hi, str(gram.device))  # (Kl, Ml)

            def outer(vh, vl):  # (B, Kh), (B, Kl) -> (B, Kh * Kl)
                return (vh[:, :, None] + vl[:, None, :]).flatten(1)

            g_hh, g_ll = gram[:, :m_hi, :m_hi], gram[:, m_hi:, m_hi:]
            g_hl = gram[:, :m_hi, m_hi:]  # (B, Mh, Ml)
            qh = ((bh @ g_hh) * bh).sum(-1)  # (B, Kh)
            ql = ((bl @ g_ll) * bl).sum(-1)  # (B, Kl)
            q1 = outer(qh, ql) + 2 * ((bh @ g_hl) @ bl.T).flatten(1)  # (B, K)  bᵀGb
            g1 = gram.sum(-1)  # (B, M)  G1
            g1b = outer(g1[:, :m_hi] @ bh.T, g1[:, m_hi:] @ bl.T)  # (B, K)  (G1)ᵀb
            q0 = gram.sum((1, 2))[:, None] - 2 * g1b + q1  # (1-b)ᵀG(1-b)
            c_0, c_1 = cross[:, :, 0], cross[:, :, 1]  # (B, M)
            c1 = outer(c_1[:, :m_hi] @ bh.T, c_1[:, m_hi:] @ bl.T)  # (B, K)
            c0 = c_0.sum(-1, keepdim=True) - outer(c_0[:, :m_hi] @ bh.T, c_0[:, m_hi:] @ bl.T)
            for q, c, j in ((q0, c0, 0), (q1, c1, 1)):
                total = total + self.signal_loss.from_stats(
                    q, ref_energy[:, j : j + 1], c, st.numel
                )
        else:
            for j in range(n_mix):
                a = (assign == j).to(gram.dtype)  # (K, M)
                q = ((a @ gram) * a).sum(-1)  # (B, K)
                c = cross[:, :, j] @ a.T  # (B, K)
                total = total + self.signal_loss.from_stats(
                    q, ref_energy[:, j : j + 1], c, st.numel
                )
        return total.argmin(-1)  # (B,)
