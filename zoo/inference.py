"""Separation of signals of any length: chunked overlap-add with bounded memory.

The signal is cut into overlapping chunks that the network separates one at a time; the chunk
estimates are cross-faded with a triangular window and added into one output buffer, so memory is
the output plus one chunk's activations, and time is linear in length (as Demucs' ``apply.py``).
Models whose outputs have no fixed order (speech separation trained with PIT or MixIT) can
permute their outputs from one chunk to the next; with ``align=True`` each chunk's outputs are
reordered to best match the previous chunk on their overlap (correlation, Hungarian matching).

:func:`iter_chunks` and :func:`join_chunks` are the other way, the AudioSlots paper's: the
signal cut into non-overlapping chunks (the last one zero-padded), each separated on its own
(or with a state carried from the previous chunk), and joined end to end. How the outputs of
consecutive chunks are put in one order is then a named protocol: blind (in the order the model
gives, e.g. with slots carried from chunk to chunk) or oracle (matched to the references chunk by
chunk: ``zoo.eval.metrics.oracle_stitch``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .matching import best_matching

__all__ = ["iter_chunks", "join_chunks", "separate_chunked"]


def _fade_window(length: int, overlap: int, device, dtype) -> Tensor:
    w = torch.ones(length, device=device, dtype=dtype)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, device=device, dtype=dtype) / (overlap + 1)
        w[:overlap] = ramp
        w[-overlap:] = ramp.flip(0)
    return w


@torch.inference_mode()
def separate_chunked(
    model: nn.Module,
    mix: Tensor,
    chunk: int | None = None,
    overlap: float = 0.25,
    align: bool | str = False,
    progress=None,
) -> Tensor:
    """Separate ``mix`` ``(B, C, T)`` into ``(B, S, C, T)``, ``chunk`` samples at a time.

    Args:
        model: a backbone, ``(B, C, t)`` → ``(B, S, C, t)``.
        mix: the input.
        chunk: chunk length in samples (``None`` or ``>= T``: one pass).
        overlap: fraction of a chunk shared with the next one (cross-faded).
        align: reorder each chunk's outputs to match the previous chunk on the overlap, by the
            correlation of the outputs (``True``) or of what sets each output apart from the
            others (``"residual"``: the outputs' mean removed first; outputs that are all near
            the mixture, as from an early model, then still pair by their differences).
        progress: optional callable ``progress(done_samples, total_samples)``.
    """
    b, c, t = mix.shape
    if chunk is None or chunk >= t:
        return model(mix)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    n_overlap = int(round(chunk * overlap))
    hop = chunk - n_overlap
    out = None
    weight = torch.zeros(t, device=mix.device, dtype=mix.dtype)
    prev_tail = None  # previous chunk's estimates on the region the next chunk overlaps
    start = 0
    while True:
        end = min(start + chunk, t)
        piece = mix[..., start:end]
        if piece.shape[-1] < chunk:  # last chunk: pad so that the network sees a full chunk
            piece = torch.nn.functional.pad(piece, (0, chunk - piece.shape[-1]))
        est = model(piece)[..., : end - start]  # (B, S, C, n)
        if out is None:
            out = torch.zeros(b, est.shape[1], c, t, device=mix.device, dtype=mix.dtype)
        if align and prev_tail is not None and n_overlap > 0:
            head = est[..., : prev_tail.shape[-1]].flatten(2)  # (B, S, C*n)
            ref = prev_tail.flatten(2)
            if align == "residual":  # the part common to all outputs removed
                head, ref = head - head.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True)
            corr = torch.bmm(head, ref.transpose(1, 2))  # (B, S_new, S_prev)
            norm = head.norm(dim=-1)[:, :, None] * ref.norm(dim=-1)[:, None, :] + 1e-8
            perm = best_matching(-(corr / norm))  # (B, S): new output matched to each previous
            est = torch.gather(est, 1, perm[:, :, None, None].expand_as(est))
        first, last = start == 0, end == t
        w = _fade_window(end - start, n_overlap, mix.device, mix.dtype)
        if first:
            w[:n_overlap] = 1.0
        if last:
            w[-min(n_overlap, end - start) :] = 1.0
        out[..., start:end] += est * w
        weight[start:end] += w
        if progress is not None:
            progress(end, t)
        if last:
            break
        prev_tail = est[..., hop:]
        start += hop
    return out / weight.clamp_min(1e-8)


def iter_chunks(mix: Tensor, chunk: int):
    """Consecutive non-overlapping chunks of ``mix`` ``(..., T)``, the last one zero-padded to
    ``chunk`` samples: yields ``(start, n_valid, piece)``."""
    if chunk <= 0:
        raise ValueError(f"chunk must be a positive number of samples, got {chunk}")
    t = mix.shape[-1]
    for start in range(0, max(t, 1), chunk):
        piece = mix[..., start : start + chunk]
        n = piece.shape[-1]
        if n < chunk:
            piece = torch.nn.functional.pad(piece, (0, chunk - n))
        yield start, n, piece


def join_chunks(pieces, t: int) -> Tensor:
    """Join per-chunk outputs ``(..., chunk)`` (from :func:`iter_chunks` order) end to end into
    ``(..., t)`` (padding dropped), filling one preallocated buffer."""
    out = None
    start = 0
    for piece in pieces:
        if out is None:
            out = piece.new_zeros(*piece.shape[:-1], t)
        n = min(piece.shape[-1], t - start)
        out[..., start : start + n] = piece[..., :n]
        start += n
    if out is None:
        raise ValueError("no chunks to join")
    return out
