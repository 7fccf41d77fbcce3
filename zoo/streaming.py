"""``zoo.stream``: separate audio as it arrives, block by block, with a causal model.

The model's own stream object (its :class:`~zoo.backbones.capabilities.Streamable` capability)
keeps what the next block needs (cached convolution inputs, the overlap-add tail); this wrapper
checks each block, runs it without autograd on the model's device, and counts samples in and
out, so that a whole stream gives exactly as many output samples as it was given.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Stream", "StreamError", "stream"]


class StreamError(ValueError):
    """A block that does not fit the stream, or a model that cannot stream."""


class Stream:
    """A stateful streaming separator (build it with :func:`stream`).

    Attributes:
        sample_rate: the model's rate (blocks are taken at it).
        channels: the input's channel count, fixed by the first block.
        latency: algorithmic latency in samples (``latency_ms`` in milliseconds), not counting
            the block size the caller chooses.
        sources: output names.
    """

    def __init__(self, backbone, channels: int | None = None):
        self.backbone = backbone
        self.sample_rate = backbone.sample_rate
        self.sources = backbone.output_names
        self.channels = channels
        self._impl = None if channels is None else self._open(channels)
        self.samples_in = self.samples_out = 0

    def _open(self, channels: int):
        want = self.backbone.audio_channels
        if want is not None and channels != want:
            raise StreamError(f"the model takes {want} channel(s), the first block has {channels}")
        from .backbones.base import ContractError
        from .backbones.capabilities import Streamable

        if not isinstance(self.backbone, Streamable):
            raise StreamError(
                f"{self.backbone.architecture} cannot run on a stream: its outputs depend on the "
                "whole input; stream a causal model (ConvTasNet with causal: true, e.g. the "
                "libri2mix_pit_causal recipe or convtasnet-causal-tiny-random; OpenUnmix with "
                "unidirectional: true and niter: 0)"
            )
        try:
            return self.backbone.streamer(channels)
        except ContractError as exc:
            raise StreamError(str(exc)) from exc

    @property
    def latency(self) -> int:
        impl = self._impl or self._open(self.channels or self.backbone.audio_channels or 1)
        return impl.latency

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency / self.sample_rate

    def push(self, block: Tensor) -> Tensor:
        """``(C, n)`` input samples (any ``n`` ≥ 1; ``(n,)`` is one channel) → the ``(S, C, k)``
        output samples that are ready; ``k`` may be 0 until a whole frame has arrived."""
        x = torch.as_tensor(block)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[-1] < 1:
            raise StreamError(
                f"a block is (channels, samples) with samples >= 1, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise StreamError(f"a block holds float samples, got {x.dtype}")
        if self._impl is None:
            self.channels = x.shape[0]
            self._impl = self._open(self.channels)
        elif x.shape[0] != self.channels:
            raise StreamError(
                f"the stream has {self.channels} channel(s), this block has {x.shape[0]}"
            )
        device = next(self.backbone.parameters()).device
        with torch.inference_mode():
            out = self._impl.push(x.to(device, torch.float32))
        self.samples_in += x.shape[-1]
        self.samples_out += out.shape[-1]
        return out.cpu()

    def flush(self) -> Tensor:
        """The rest of the output (``(S, C, r)``); afterwards the stream starts afresh."""
        if self._impl is None:
            return torch.zeros(len(self.sources), self.channels or 1, 0)
        with torch.inference_mode():
            out = self._impl.flush().cpu()
        self.samples_out += out.shape[-1]
        assert self.samples_out == self.samples_in, (self.samples_out, self.samples_in)
        self.samples_in = self.samples_out = 0
        return out


def stream(model, channels: int | None = None, download: bool = False) -> Stream:
    """A streaming separator: ``push(block)`` returns what is ready, ``flush()`` the rest.

    Args:
        model: a :class:`zoo.hub.api.Separator`, a backbone, or anything :func:`zoo.load` takes.
        channels: the input's channel count (default: taken from the first block).
        download: fetch a registered model that is not in the cache yet.

    Raises:
        StreamError: the model is not causal (say which model to stream instead).
    """
    from .backbones.base import Backbone

    if isinstance(model, Backbone):
        backbone = model
    elif isinstance(getattr(model, "backbone", None), Backbone):
        backbone = model.backbone
    else:
        from .hub.api import load

        backbone = load(model, download=download).backbone
    backbone.eval()
    s = Stream(backbone, channels)
    if channels is None:  # check that it can stream before the first block arrives
        s._open(backbone.audio_channels or 1)
    return s
