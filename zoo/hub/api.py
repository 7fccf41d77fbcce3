"""``zoo.load``: a ready separator from a zoo model folder, a registry name or a URL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..backbones.base import Backbone
from ..dsp import resample_blocks
from ..inference import separate_chunked

__all__ = ["Separator", "load"]


class Separator(nn.Module):
    """A backbone in eval mode with what it takes to separate real files.

    Attributes:
        backbone: the network, ``(B, C, T)`` → ``(B, S, C, T)``.
        sample_rate: the rate it works at; ``separate`` resamples to it and back.
        sources: output names (``s1, s2, ...`` for anonymous outputs); ``config``: the config
            it was loaded from (``backbone``: class path and arguments; provenance...).
        ordered: named outputs keep their order between chunks; anonymous ones may swap and
            are aligned on the chunk overlaps.
    """

    def __init__(self, backbone: Backbone, config: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.config = dict(config or {})
        self.sample_rate = backbone.sample_rate
        self.n_src = backbone.n_src
        self.sources = backbone.output_names
        self.audio_channels = backbone.audio_channels
        self.ordered = backbone.ordered
        self.eval()

    def forward(self, mix: Tensor) -> Tensor:
        return self.backbone(mix)

    def prepare(self, wav: Tensor | np.ndarray, sample_rate: int) -> Tensor:
        """``(T,)`` or ``(C, T)`` input → ``(C', t)`` at the model's rate and channel count."""
        x = torch.as_tensor(wav, dtype=torch.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"expected (time,) or (channels, time), got {tuple(x.shape)}")
        c = x.shape[0]
        want = self.audio_channels
        if want == 1 and c > 1:
            x = x.mean(0, keepdim=True)
        elif want is not None and want > 1 and c == 1:
            x = x.expand(want, -1)
        elif want is not None and c != want:
            raise ValueError(f"the model takes {want} channels, the input has {c}")
        if sample_rate != self.sample_rate:
            x = torch.cat(list(resample_blocks(x, sample_rate, self.sample_rate)), -1)
        return x

    @torch.inference_mode()
    def separate_prepared(
        self, x: Tensor, chunk_seconds: float | None = 8.0, overlap: float = 0.25, progress=None
    ) -> Tensor:
        """``(C, t)`` at the model's rate → ``(S, C, t)`` estimates at the model's rate."""
        device = next(self.backbone.parameters()).device
        chunk = None if chunk_seconds is None else int(chunk_seconds * self.sample_rate)
        return separate_chunked(
            self.backbone,
            x[None].to(device),
            chunk,
            overlap,
            align=not self.ordered,
            progress=progress,
        )[0].cpu()

    def restore(self, est: Tensor, sample_rate: int, length: int, channels: int):
        """Yield ``(C, n)`` blocks of one source ``est`` ``(C', t)`` back at ``sample_rate``, with
        the input's channel count, ``length`` samples in all (block-wise: bounded memory)."""
        done = 0
        for piece in resample_blocks(est, self.sample_rate, sample_rate):
            piece = self.to_channels(piece[..., : max(0, length - done)], channels)
            done += piece.shape[-1]
            yield piece
        if done < length:
            yield torch.zeros(channels, length - done)

    @staticmethod
    def to_channels(piece: Tensor, channels: int) -> Tensor:
        """An output ``(C', n)`` at the model's channel count → the input's ``channels``."""
        if piece.shape[0] == 1 and channels > 1:
            return piece.expand(channels, -1)
        if piece.shape[0] > 1 and channels == 1:  # a mono input given to a stereo model
            return piece.mean(0, keepdim=True)
        return piece

    @torch.inference_mode()
    def separate(
        self,
        wav: Tensor | np.ndarray,
        sample_rate: int,
        chunk_seconds: float | None = 8.0,
        overlap: float = 0.25,
        progress=None,
    ) -> Tensor:
        """Separate one recording.

        Args:
            wav: ``(T,)`` or ``(C, T)`` waveform (float).
            sample_rate: its sample rate; resampled to the model's and back.
            chunk_seconds: chunk length for overlap-add (``None``: one pass).
            overlap: chunk overlap fraction.
            progress: optional ``progress(done, total)`` callback.

        Returns:
            ``(S, C, T)`` estimates at ``sample_rate``.
        """
        x0 = torch.as_tensor(wav)
        c, t = (1, x0.shape[0]) if x0.ndim == 1 else x0.shape
        est = self.separate_prepared(
            self.prepare(wav, sample_rate), chunk_seconds, overlap, progress
        )
        return torch.stack([torch.cat(list(self.restore(e, sample_rate, t, c)), -1) for e in est])


def load(
    name_or_path: str | Path,
    download: bool = False,
    cache_dir: str | Path | None = None,
    trust: bool = False,
) -> Separator:
    """A ready separator (eval mode) from a zoo model folder, a registry name or a URL.

    Args:
        name_or_path: a folder with ``config.json`` + ``model.safetensors``; a peer's checkpoint
            (an Open-Unmix model folder, an Asteroid package or a torchaudio ConvTasNet state
            dict, converted on the fly); a registry name (``zoo list``); or a URL /
            ``hf://owner/repo`` of a registered model.
        download: allow fetching a registered model that is not in the cache yet.
        cache_dir: where downloads are kept (default ``$ZOO_CACHE`` or ``~/.cache/separation-zoo``).
        trust: accept the hash of a registered file that has no sha256 recorded (see
            :func:`zoo.hub.registry.fetch`).

    ``hf://owner/repo[@revision]`` (not a registered file) loads a zoo model repo from the
    Hugging Face Hub through its cache (:func:`zoo.hub.hf.load_repo`): a hub URL is itself the
    request to download, so ``download`` is not needed; ``HF_HUB_OFFLINE=1`` loads from the
    cache only.
    """
    p = Path(str(name_or_path)).expanduser()
    if p.exists():  # a zoo folder or a peer's checkpoint (Open-Unmix, Asteroid, torchaudio)
        from .readers import load_path

        return Separator(*load_path(p))
    from .registry import registered, resolve

    name = str(name_or_path)
    if name.startswith("hf://") and registered(name) is None:  # a zoo model repo on the hub
        from .hf import load_repo

        return Separator(*load_repo(name))
    return Separator(*resolve(name, download=download, cache_dir=cache_dir, trust=trust))
