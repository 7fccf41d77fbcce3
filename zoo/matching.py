"""Assignment of estimates to references on a pairwise cost matrix: the one solver that the
losses (PIT, Hungarian set matching), evaluation (PIT-matched metrics) and chunked inference
(output alignment between chunks) share."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["best_matching", "MAX_EXHAUSTIVE"]

# Exhaustive search is vectorised and exact; above this many candidate matchings the
# Hungarian algorithm (scipy, O(n^3) per item) is used instead.
MAX_EXHAUSTIVE = 720


@lru_cache(maxsize=64)
def _k_permutations(n_est: int, n_ref: int) -> Tensor:
    """All ordered choices of ``n_ref`` distinct estimates out of ``n_est``: ``(P, n_ref)``."""
    return torch.tensor(list(itertools.permutations(range(n_est), n_ref)), dtype=torch.long)


def best_matching(pw: Tensor, method: str = "auto") -> Tensor:
    """Assign one distinct estimate to every reference, minimising the mean pairwise loss.

    Args:
        pw: ``(B, n_est, n_ref)`` pairwise losses, ``n_est >= n_ref``.
        method: ``"exhaustive"``, ``"hungarian"`` or ``"auto"`` (exhaustive while there are at most
            720 candidate matchings).

    Returns:
        ``(B, n_ref)`` long tensor: ``perm[b, j]`` is the estimate matched to reference ``j``.
    """
    b, n_est, n_ref = pw.shape
    if n_est < n_ref:
        raise ValueError(
            f"matching needs at least as many estimates as references, got a pairwise matrix "
            f"{tuple(pw.shape)} (batch, n_est={n_est}, n_ref={n_ref})"
        )
    n_candidates = math.perm(n_est, n_ref)
    if method == "auto":
        method = "exhaustive" if n_candidates <= MAX_EXHAUSTIVE else "hungarian"
    pw = pw.detach()
    if method == "exhaustive":
        perms = _k_permutations(n_est, n_ref).to(pw.device)  # (P, n_ref)
        ref_idx = torch.arange(n_ref, device=pw.device).expand_as(perms)
        cost = pw[:, perms, ref_idx].sum(-1)  # (B, P)
        return perms[cost.argmin(-1)]  # (B, n_ref)
    if method == "hungarian":
        cost = pw.to(torch.float64).cpu().numpy()
        out = np.empty((b, n_ref), dtype=np.int64)
        for i in range(b):
            rows, cols = linear_sum_assignment(cost[i])  # rows: estimates, cols: references
            out[i, cols] = rows
        return torch.from_numpy(out).to(pw.device)
    raise ValueError(f"unknown matching method {method!r}: use 'auto', 'exhaustive' or 'hungarian'")
