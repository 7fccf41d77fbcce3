"""The backbone contract: what every separation network provides to the rest of the zoo.

The system (training, validation, test), the hub (export, loading, separation of files) and the
run layer (recipes, evaluation) read only what is written here; nothing else is probed.

A backbone is an ``nn.Module`` whose typed ``__init__`` arguments describe it completely
(LightningCLI builds ``--help`` from them, and the zoo format stores them), with:

* ``forward(mix)``: waveforms ``(B, C, T)`` at ``sample_rate`` → ``(B, n_src, C, T)``.
  Spectrogram models do their own STFT / iSTFT inside.
* ``sample_rate`` (int, Hz): the rate it works at. A recipe states it once, in the backbone;
  the datamodule's rate follows it (the run layer links them).
* ``n_src`` (int): number of outputs (M for MixIT, slots for AudioSlots).
* ``sources`` (list of ``n_src`` names, or ``None``): named outputs are *ordered* (output ``j``
  is the target called ``sources[j]``: matched fixed, scored per target); ``None`` means
  anonymous outputs, matched to the references by PIT.
* ``audio_channels`` (int or ``None``): the channel count the network takes; ``None``: any
  (channels are separated independently).
* ``architecture`` (str): the name the leaderboard shows (default: the class name).

Optional hooks, with no-op defaults here:

* ``fit_input_stats(mixtures) -> list[str]``: data-initialised input normalisation; called by
  the system with training mixtures when a fresh fit starts; returns the state keys it set
  (rank 0's values are broadcast under DDP). Default: nothing, and the mixtures are not read.
* ``auxiliary_loss(ref) -> Tensor | None``: extra training terms for the last training
  forward, added to the objective (Meta-TasNet). Default: ``None``.
* ``needs_sources`` (class attribute): ``forward(mix, sources)`` takes the true sources
  (oracle baselines). Default: ``False``.
* ``test_protocol`` (dict): how ``forward`` separates a test input (e.g. chunks and how their
  outputs are put in one order, the mask type), recorded in ``metrics.json`` beside the
  protocol name (``blind``: no references; ``oracle``: backbones that need the sources).
  Default: ``{}`` (the whole input in one pass).
* ``test_chunk`` (int samples or ``None``) and ``separate_chunks(mix)``: a backbone that
  separates long inputs chunk by chunk yields the outputs of consecutive non-overlapping chunks
  (the last zero-padded), so the system can also score the paper protocol that orders each
  chunk's outputs with the references (``oracle_stitch``, always labelled). Default: ``None``
  (no chunk protocols); ``separate_chunks`` then calls ``forward`` chunk by chunk.
* ``real_stft`` (attribute) and :meth:`Backbone.use_real_stft`: a spectrogram backbone that
  sets ``self.real_stft = None`` and has ``n_fft``, ``hop`` and ``window`` can compute its STFT
  and iSTFT as real-valued convolutions (:class:`zoo.dsp.RealSTFT`) once ``use_real_stft()`` is
  called; ``zoo export-onnx`` does so (ONNX has no complex tensors). Default: no such path.
* ``export_chunk`` (int samples or ``None``): a backbone whose exported graph separates one
  clip of fixed length (AudioSlots' clips); the graph's time axis is then that length, and
  cutting and joining clips stay with the caller. Default: ``None`` (a dynamic length).
* ``streamer(channels)``: a causal backbone returns a stream object with ``push(block)``
  (``(C, n)`` input, any ``n`` ≥ 1 → the ``(n_src, C, k)`` output samples no later input can
  change), ``flush()`` (the rest) and ``latency`` (samples); the streamed outputs equal
  ``forward`` on the whole input within float32 rounding. :func:`zoo.stream` wraps it.
  Default: :class:`ContractError` (not streamable).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import ClassVar

from torch import Tensor, nn

from ..inference import iter_chunks

__all__ = ["Backbone", "ContractError"]


class ContractError(TypeError):
    """A backbone that does not provide what the contract says."""


class Backbone(nn.Module):
    """Base class of every zoo backbone (see the module docstring for the contract)."""

    sample_rate: int
    n_src: int
    sources: list[str] | None = None
    audio_channels: int | None = None
    needs_sources: ClassVar[bool] = False

    @property
    def architecture(self) -> str:
        return type(self).__name__

    @property
    def ordered(self) -> bool:
        """Named outputs: output ``j`` is target ``sources[j]`` (fixed matching)."""
        return bool(self.sources)

    @property
    def output_names(self) -> list[str]:
        """``sources``, or ``s1, s2, ...`` for anonymous outputs (file names, CSV columns)."""
        return list(self.sources) if self.sources else [f"s{j + 1}" for j in range(self.n_src)]

    def fit_input_stats(self, mixtures: Iterable[Tensor]) -> list[str]:
        return []

    def auxiliary_loss(self, ref: Tensor) -> Tensor | None:
        return None

    test_chunk: int | None = None
    export_chunk: int | None = None

    @property
    def test_protocol(self) -> dict:
        return {}

    def separate_chunks(self, mix: Tensor) -> Iterator[Tensor]:
        """``(B, n_src, C, test_chunk)`` outputs of consecutive non-overlapping chunks of ``mix``
        ``(B, C, T)``; subclasses that carry a state from chunk to chunk override this."""
        if not self.test_chunk:
            raise ContractError(f"{type(self).__name__} has no test_chunk to cut inputs into")
        for _, _, piece in iter_chunks(mix, self.test_chunk):
            yield self(piece)

    def use_real_stft(self, on: bool = True) -> Backbone:
        """Switch the STFT / iSTFT to real-valued convolutions (``on``) or back to torch's
        complex ones; outputs agree within float32 rounding (tested per backbone)."""
        if not hasattr(self, "real_stft"):
            raise ContractError(f"{type(self).__name__} has no real-valued STFT path")
        from ..dsp import RealSTFT

        self.real_stft = RealSTFT(self.n_fft, self.hop, self.window) if on else None
        return self

    def streamer(self, channels: int):
        """A stream of ``channels``-channel input through this network (causal backbones)."""
        raise ContractError(
            f"{self.architecture} cannot run on a stream: its outputs depend on the whole input; "
            "stream a causal model (ConvTasNet with causal: true, e.g. the libri2mix_pit_causal "
            "recipe or convtasnet-causal-tiny-random; OpenUnmix with unidirectional: true and "
            "niter: 0)"
        )

    def check_contract(self) -> None:
        """Raise :class:`ContractError` naming what is missing or inconsistent."""
        name = type(self).__name__
        rate = getattr(self, "sample_rate", None)
        if not isinstance(rate, int) or rate <= 0:
            raise ContractError(f"{name}.sample_rate must be a positive int (Hz), got {rate!r}")
        n = getattr(self, "n_src", None)
        if not isinstance(n, int) or n <= 0:
            raise ContractError(f"{name}.n_src must be a positive int, got {n!r}")
        if self.sources is not None and len(self.sources) != n:
            raise ContractError(f"{name}.sources {self.sources} must name all n_src={n} outputs")
        ch = self.audio_channels
        if ch is not None and (not isinstance(ch, int) or ch <= 0):
            raise ContractError(f"{name}.audio_channels must be None or a positive int, got {ch}")
