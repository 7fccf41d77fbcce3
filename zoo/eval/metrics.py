"""Metrics shared by validation, test, ``zoo evaluate`` and the oracles."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["single_thread", "bss_sdr"]


@contextlib.contextmanager
def single_thread():
    """Run linear solves with one thread: batched ``torch.linalg.solve`` on matrices of ~150x150
    and up returns wrong values with 2+ threads on some CPUs (an open PyTorch bug), and BSS Eval
    SDR solves 512x512 systems."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def bss_sdr(est: Tensor, ref: Tensor) -> Tensor:
    """BSS Eval SDR (torchmetrics, 512-tap distortion filter) in float64, single-threaded.

    Shape: ``(..., T)`` → ``(...)``, in ``est``'s dtype.
    """
    from torchmetrics.functional.audio import signal_distortion_ratio

    with single_thread():
        return signal_distortion_ratio(est.double(), ref.double()).to(est.dtype)
