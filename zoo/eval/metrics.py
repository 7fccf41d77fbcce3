"""Metric kernels shared by validation, test, ``zoo evaluate`` and the oracles: matched SI-SDR
scores, BSS Eval SDR, museval-style per-item medians and their summary over items, and the
compute cost of a network. Nothing here builds a system, a trainer or a run."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as si_sdr_fn

from ..losses import NegSISDR
from ..matching import best_matching
from .bsseval import METRICS, bss_eval_v4

__all__ = [
    "DEFINITIONS",
    "bss_eval_items",
    "bss_sdr",
    "full_track_sdr",
    "macs_per_second",
    "match_and_score",
    "oracle_stitch",
    "single_thread",
    "summarize_bss",
]


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


def match_and_score(
    est: Tensor, sources: Tensor, mix: Tensor, sdr: bool = False, fixed: bool = False
) -> dict[str, Tensor]:
    """Supervised scores of estimates, whatever objective produced them.

    The ``n_src`` estimates that best match the sources (PIT on negative SI-SDR; with M > n_src
    outputs, the best-matching subset; ``fixed=True``: estimate ``j`` is source ``j``, for named
    sources) are scored with torchmetrics' SI-SDR (zero-mean), and SI-SDRi subtracts the SI-SDR
    of the mixture itself. Scores are computed in float32 at least.

    Shape:
        est ``(B, M, C, T)``, sources ``(B, n_src, C, T)``, mix ``(B, C, T)``.
        Returns per-item, per-source ``si_sdr``, ``si_sdri`` ``(B, n_src)`` and ``perm``; with
        ``sdr=True`` also BSS Eval ``sdr`` and ``sdri`` (see :func:`bss_sdr`).
    """
    dtype = torch.promote_types(est.dtype, torch.float32)
    est, sources, mix = est.to(dtype), sources.to(dtype), mix.to(dtype)
    if fixed:
        if est.shape[1] != sources.shape[1]:
            raise ValueError(
                f"fixed matching needs one estimate per source: estimates {tuple(est.shape)}, "
                f"sources {tuple(sources.shape)}"
            )
        perm = torch.arange(sources.shape[1], device=est.device).expand(est.shape[0], -1)
    else:
        perm = best_matching(NegSISDR()(est, sources))  # (B, n_src) from a (B, M, n_src) matrix
    matched = torch.gather(est, 1, perm[:, :, None, None].expand(-1, -1, *est.shape[2:]))
    flat = lambda x: x.flatten(2)  # noqa: E731  (B, n, C*T)
    mix_as_est = flat(mix.unsqueeze(1).expand_as(sources))  # the mixture as every estimate
    si_sdr = si_sdr_fn(flat(matched), flat(sources), zero_mean=True)  # (B, n_src)
    base = si_sdr_fn(mix_as_est, flat(sources), zero_mean=True)
    out = {"si_sdr": si_sdr, "si_sdri": si_sdr - base, "perm": perm}
    if sdr:
        d = bss_sdr(flat(matched), flat(sources))
        out["sdr"], out["sdri"] = d, d - bss_sdr(mix_as_est, flat(sources))
    return out


def oracle_stitch(chunks, sources: Tensor) -> Tensor:
    """The AudioSlots paper's test protocol (Reddy et al. 2023, section 3): the outputs of each
    non-overlapping chunk are matched to the references *on that chunk* (one distinct output per
    reference, best summed SI-SDR), then the chunks are joined. It needs the references, so its
    scores are always labelled ``oracle_stitch``; the blind result is the model's own order.

    Shape:
        chunks: iterable of ``(B, M, C, chunk)`` (consecutive, the last zero-padded);
        sources ``(B, n_src, C, T)`` → ``(B, n_src, C, T)``.
    """
    b, n_src, c, t = sources.shape
    out = sources.new_zeros(b, n_src, c, t)
    start = 0
    for est in chunks:
        n = min(est.shape[-1], t - start)
        if n <= 0:
            break
        piece, ref = est[..., :n].to(sources.dtype), sources[..., start : start + n]
        perm = best_matching(NegSISDR()(piece, ref))  # (B, n_src) from (B, M, n_src)
        out[..., start : start + n] = torch.gather(
            piece, 1, perm[:, :, None, None].expand(-1, -1, c, n)
        )
        start += n
    if start < t:
        raise ValueError(f"the chunks cover {start} of {t} samples")
    return out


# Each music SDR a results file holds, by the definition that makes it comparable (a published
# number is shown only in the column of its own definition).
DEFINITIONS = {
    "sdr": "BSS Eval v4 SDR as museval aggregates it (SiSEC 2018, most MUSDB18 papers): median "
    "over 1 s frames per track, median over tracks, mean over targets",
    "usdr": "full-track ('utterance') SDR as the Music Demixing Challenge and the RoFormer "
    "community tables report it: 10 log10(sum s^2 / sum (s - est)^2) over the whole track and "
    "its channels (1e-7 added to both sums), mean over tracks, mean over targets",
    "si_sdr": "scale-invariant SDR (zero-mean) of the whole item, mean over items and sources",
}


def full_track_sdr(est: Tensor, ref: Tensor, delta: float = 1e-7) -> Tensor:
    """The Music Demixing Challenge's SDR of whole tracks (``usdr`` in :data:`DEFINITIONS`),
    in float64. Shape: ``(..., C, T)`` → ``(...)``."""
    est, ref = est.double(), ref.double()
    num = ref.square().sum((-2, -1)) + delta
    den = (ref - est).square().sum((-2, -1)) + delta
    return 10 * torch.log10(num / den)


def bss_eval_items(
    est: Tensor, sources: Tensor, names: list[str], sample_rate: int
) -> list[dict[str, float]]:
    """museval's v4 scores per item: ``{"<metric>_<target>": median over 1 s windows}``, and
    the full-track SDR of each target (``usdr_<target>``).

    Shape:
        est, sources ``(B, S, C, T)`` in the same (fixed) order.
    """
    out = []
    for b in range(est.shape[0]):
        ref = sources[b].double().cpu().numpy().transpose(0, 2, 1)  # (S, T, C)
        e = est[b].double().cpu().numpy().transpose(0, 2, 1)
        framewise = bss_eval_v4(
            ref, e, win=sample_rate, hop=sample_rate, names=names, silent_estimates="score"
        )
        with warnings.catch_warnings():  # all-NaN targets (silent throughout) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            row = {
                f"{m}_{name}": float(np.nanmedian(framewise[m][j]))
                for m in METRICS
                for j, name in enumerate(names)
            }
        usdr = full_track_sdr(est[b, : len(names)], sources[b, : len(names)])
        row.update({f"usdr_{name}": float(usdr[j]) for j, name in enumerate(names)})
        out.append(row)
    return out


def summarize_bss(rows: list[dict], names: list[str]) -> dict:
    """museval's aggregation: per target, the median over tracks of the per-track medians; the
    headline ``sdr`` etc. average the per-target medians (as papers report "avg SDR")."""
    if not rows or f"sdr_{names[0]}" not in rows[0]:
        return {}
    targets = {}
    for name in names:
        targets[name] = {
            m: round(float(np.nanmedian([r[f"{m}_{name}"] for r in rows])), 4) for m in METRICS
        }
        if f"usdr_{name}" in rows[0]:  # the challenge's aggregate: mean over tracks
            targets[name]["usdr"] = round(float(np.mean([r[f"usdr_{name}"] for r in rows])), 4)
    keys = [*METRICS, *(["usdr"] if "usdr" in targets[names[0]] else [])]
    avg = {m: round(float(np.mean([t[m] for t in targets.values()])), 4) for m in keys}
    return {"targets": targets, **avg}


def macs_per_second(backbone: nn.Module, channels: int = 1) -> int:
    """Multiply-accumulates to separate one second of audio (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    channels = backbone.audio_channels or channels
    device = next((p.device for p in backbone.parameters()), torch.device("cpu"))
    x = torch.zeros(1, channels, int(backbone.sample_rate), device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backbone(x)
    return int(counter.get_total_flops() // 2)
