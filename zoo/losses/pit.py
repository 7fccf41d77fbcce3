"""Permutation invariant training and rectangular (Hungarian) matching on a pairwise matrix."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..matching import best_matching
from .signal import NegSISDR, PairwiseLoss, check_same_trailing_shape

__all__ = ["best_matching", "FixedOrderLoss", "PITLoss", "HungarianLoss"]


def _gather_matched(pw: Tensor, perm: Tensor) -> Tensor:
    """``pw[b, perm[b, j], j]`` as ``(B, n_ref)``."""
    return torch.gather(pw, 1, perm[:, None, :]).squeeze(1)


class PITLoss(nn.Module):
    """Permutation invariant training (Yu et al. 2017) on one pairwise matrix.

    The loss of an item is the mean over references of the pairwise loss under the best
    permutation; the batch loss is the mean over items. Exhaustive search over the ``n!``
    permutations for small ``n`` (vectorised), Hungarian algorithm above.

    Args:
        signal_loss: any module mapping ``(est, ref)`` to a ``(B, n_est, n_ref)`` pairwise matrix
            (default: negative SI-SDR).
        method: ``"auto"``, ``"exhaustive"`` or ``"hungarian"``.

    Shape:
        - est, ref: ``(B, n_src, *)``, same shape.
        - returns ``(loss, info)``; ``info["perm"]`` is ``(B, n_src)``, ``est[b, perm[b]]`` is
          aligned with ``ref[b]``; ``info["per_item"]`` is ``(B,)``.
    """

    def __init__(self, signal_loss: nn.Module | None = None, method: str = "auto"):
        super().__init__()
        self.signal_loss = signal_loss if signal_loss is not None else NegSISDR()
        self.method = method

    def forward(self, est: Tensor, ref: Tensor):
        if est.shape != ref.shape:
            raise ValueError(
                f"PITLoss: estimates {tuple(est.shape)} and references {tuple(ref.shape)} must "
                "have the same shape (use HungarianLoss or MixITLoss for more estimates than "
                "references)"
            )
        pw = self.signal_loss(est, ref)  # (B, n, n)
        perm = best_matching(pw, self.method)
        per_item = _gather_matched(pw, perm).mean(-1)  # (B,)
        return per_item.mean(), {"perm": perm, "per_item": per_item, "pairwise": pw}


class FixedOrderLoss(nn.Module):
    """Named sources (music): estimate ``j`` is scored against reference ``j``, no matching.

    Args:
        signal_loss: pairwise signal loss (its diagonal is used).

    Shape:
        est, ref ``(B, n_src, *)``, same shape → ``(loss, info)`` with ``info["per_item"]``.
    """

    def __init__(self, signal_loss: nn.Module | None = None):
        super().__init__()
        self.signal_loss = signal_loss if signal_loss is not None else NegSISDR()

    def forward(self, est: Tensor, ref: Tensor):
        if est.shape != ref.shape:
            raise ValueError(
                f"FixedOrderLoss: estimates {tuple(est.shape)} and references "
                f"{tuple(ref.shape)} must have the same shape (one output per named target)"
            )
        per_source = torch.diagonal(self.signal_loss(est, ref), dim1=1, dim2=2)  # (B, n_src)
        per_item = per_source.mean(-1)
        perm = torch.arange(est.shape[1], device=est.device).expand(est.shape[0], -1)
        return per_item.mean(), {"perm": perm, "per_item": per_item, "per_source": per_source}


class HungarianLoss(nn.Module):
    """Set-prediction loss: more slots than sources, matched one-to-one (as in AudioSlots).

    Args:
        signal_loss: pairwise signal loss (MSE for spectrogram slots, SI-SDR for waveforms).
        unmatched: ``"ignore"`` (unmatched slots get no gradient) or ``"silence"`` (their loss
            against a silent reference, see ``PairwiseLoss.silence``, is added).
        silence_weight: weight of the silence term.

    Shape:
        - est: ``(B, n_slots, *)``, ref: ``(B, n_src, *)``, ``n_slots >= n_src``.
        - ``info["perm"]``: ``(B, n_src)`` slot matched to each source; ``info["unmatched"]``:
          ``(B, n_slots)`` boolean mask.
    """

    def __init__(
        self,
        signal_loss: PairwiseLoss | None = None,
        unmatched: str = "ignore",
        silence_weight: float = 1.0,
    ):
        super().__init__()
        if unmatched not in ("ignore", "silence"):
            raise ValueError(f"unmatched must be 'ignore' or 'silence', got {unmatched!r}")
        self.signal_loss = signal_loss if signal_loss is not None else NegSISDR()
        self.unmatched = unmatched
        self.silence_weight = silence_weight

    def forward(self, est: Tensor, ref: Tensor):
        check_same_trailing_shape(est, ref, "HungarianLoss")
        if est.shape[1] < ref.shape[1]:
            raise ValueError(
                f"HungarianLoss: estimates {tuple(est.shape)} have fewer slots than references "
                f"{tuple(ref.shape)} have sources"
            )
        st = self.signal_loss.stats(est, ref)
        pw = self.signal_loss.from_stats(
            st.est_energy[:, :, None], st.ref_energy[:, None, :], st.cross, st.numel
        )  # (B, n_slots, n_src)
        perm = best_matching(pw, "hungarian")
        per_item = _gather_matched(pw, perm).mean(-1)  # (B,)
        unmatched = torch.ones(est.shape[:2], dtype=torch.bool, device=est.device)
        unmatched.scatter_(1, perm, False)
        if self.unmatched == "silence" and est.shape[1] > ref.shape[1]:
            sil = self.signal_loss.silence(st.est_energy, st.numel)  # (B, n_slots)
            n_unmatched = est.shape[1] - ref.shape[1]
            per_item = per_item + self.silence_weight * (sil * unmatched).sum(-1) / n_unmatched
        per_item = per_item.to(est.dtype)
        return per_item.mean(), {
            "perm": perm,
            "unmatched": unmatched,
            "per_item": per_item,
            "pairwise": pw.to(est.dtype),
        }
