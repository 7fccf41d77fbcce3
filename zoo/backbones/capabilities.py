"""Opt-in capabilities of a backbone: what a few networks can do beyond the core contract.

A backbone that has a capability inherits its mixin; the system, the hub and the run layer ask
``isinstance(backbone, Capability)`` and never keep tables of class names. Each mixin holds the
defaults; a class overrides what differs and, where one configuration of it cannot do the thing
(a bidirectional Open-Unmix on a stream, the slot-carrying AudioSlots in a graph), refuses in
one line from the method itself.

* :class:`Streamable`: ``streamer(channels)`` runs the network on a stream (causal models).
* :class:`Exportable`: ``export_form()`` puts the network in the form an ONNX / TorchScript
  graph traces, or refuses; ``export_chunk`` (a graph of one fixed-length clip),
  ``exporters`` (which exporters to try), ``export_min_length``.
* :class:`RealSTFTPath`: ``use_real_stft()`` switches a spectrogram network's STFT / iSTFT to
  real-valued convolutions (ONNX has no complex tensors); :meth:`Exportable.export_form` does so.
* :class:`TestProtocol`: how ``forward`` separates a test input (``test_protocol``, recorded in
  ``metrics.json``), and for networks that separate clip by clip (``test_chunk``,
  ``separate_chunks``) the labelled ``oracle_stitch`` protocol beside the blind one.
* :class:`InputStatistics`: ``fit_input_stats(mixtures)``, data-initialised input normalisation
  on a fresh fit.
* :class:`AuxiliaryLoss`: ``auxiliary_loss(ref)``, extra training terms.
* :class:`NeedsSources`: ``forward(mix, sources)`` reads the true sources (oracle reference
  rows: never a separator, scored as the ``oracle`` protocol).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import ClassVar

from torch import Tensor

from ..inference import iter_chunks
from .base import ContractError

__all__ = [
    "AuxiliaryLoss",
    "ExportRefused",
    "Exportable",
    "InputStatistics",
    "NeedsSources",
    "RealSTFTPath",
    "Streamable",
    "TestProtocol",
]


class ExportRefused(TypeError):
    """This backbone, in this configuration, has no export form (the message says why)."""


class Streamable:
    """Runs on a stream: ``streamer(channels)`` returns an object with ``push(block)`` (``(C, n)``
    input, any ``n`` ≥ 1 → the ``(n_src, C, k)`` output samples no later input can change),
    ``flush()`` (the rest) and ``latency`` (samples); the streamed outputs equal ``forward`` on
    the whole input within float32 rounding. :func:`zoo.stream` wraps it. A configuration that
    reads the future raises :class:`~zoo.backbones.base.ContractError` naming what to change."""

    def streamer(self, channels: int):
        raise NotImplementedError


class RealSTFTPath:
    """A spectrogram network with ``n_fft``, ``hop``, ``window`` and a ``real_stft`` attribute
    (``None`` in ``__init__``) whose STFT / iSTFT can run as real-valued convolutions
    (:class:`zoo.dsp.RealSTFT`); outputs agree within float32 rounding (tested per backbone)."""

    # no class attribute ``real_stft``: it would hide the submodule nn.Module keeps once set

    def use_real_stft(self, on: bool = True):
        """Switch to the real-valued path (``on``) or back to torch's complex STFT."""
        from ..dsp import RealSTFT

        self.real_stft = RealSTFT(self.n_fft, self.hop, self.window) if on else None
        return self


class Exportable:
    """Exports as an ONNX / TorchScript graph ``(B, C, T)`` → ``(B, S, C, T)``.

    ``export_form()`` is called on a copy loaded for export, before tracing: it switches the
    module to what the graph holds (Open-Unmix drops its Wiener EM) and returns notes on what the
    graph leaves out, recorded in the graph and the export record; it raises
    :class:`ExportRefused` for a configuration that does not export (a :class:`RealSTFTPath`
    network is then switched to its real-valued STFT by the exporter). ``export_chunk``: the
    graph separates one clip of that many samples (fixed time axis; the caller cuts and joins
    clips), ``None``: a dynamic length. ``exporters``: the ONNX exporters tried in turn (``dynamo``:
    torch.export; ``torchscript``: the tracer). ``export_min_length``: the shortest input the
    traced graph must accept (its dynamic time axis starts there).
    """

    export_chunk: int | None = None
    exporters: ClassVar[tuple[str, ...]] = ("dynamo", "torchscript")
    export_min_length: int = 64

    def export_form(self) -> list[str]:
        return []


class TestProtocol:
    """Says how ``forward`` separates a test input (``test_protocol``: e.g. clip length, how the
    clips' outputs are put in one order, the mask type), recorded in ``metrics.json`` beside the
    protocol name. A network that separates long inputs clip by clip also gives ``test_chunk``
    (samples) and ``separate_chunks(mix)``: the outputs of consecutive non-overlapping clips
    (the last zero-padded), so the system can score the paper protocol that orders each clip's
    outputs with the references (``oracle_stitch_*``, always labelled)."""

    __test__ = False  # not a pytest class, whatever its name
    test_chunk: int | None = None

    @property
    def test_protocol(self) -> dict:
        return {}

    def separate_chunks(self, mix: Tensor) -> Iterator[Tensor]:
        """``(B, n_src, C, test_chunk)`` outputs of consecutive non-overlapping chunks of ``mix``
        ``(B, C, T)``; networks that carry a state from chunk to chunk override this."""
        if not self.test_chunk:
            raise ContractError(f"{type(self).__name__} has no test_chunk to cut inputs into")
        for _, _, piece in iter_chunks(mix, self.test_chunk):
            yield self(piece)


class InputStatistics:
    """Data-initialised input normalisation: ``fit_input_stats(mixtures)`` is called by the
    system with the mixtures of a few training batches when a fresh fit starts (not a resumed
    one) and returns the state keys it set (rank 0's values are broadcast under DDP)."""

    def fit_input_stats(self, mixtures: Iterable[Tensor]) -> list[str]:
        raise NotImplementedError


class AuxiliaryLoss:
    """Extra training terms: ``auxiliary_loss(ref)`` for the last training forward, added to the
    objective by the system (Meta-TasNet)."""

    def auxiliary_loss(self, ref: Tensor) -> Tensor:
        raise NotImplementedError


class NeedsSources:
    """``forward(mix, sources)`` reads the true sources: an oracle reference row, trained and
    scored with the references (protocol ``oracle``), never deployed as a separator."""
