"""The backbone contract: what every separation network provides to the rest of the zoo.

The system (training, validation, test), the hub (export, loading, separation of files) and the
run layer (recipes, evaluation) read only what is written here and in
:mod:`zoo.backbones.capabilities`; nothing else is probed.

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
* ``check_contract()``: raises :class:`ContractError` naming what is missing (the system calls
  it when it is built).

That core stays small. What a few networks can do beyond it is an opt-in capability, a mixin in
:mod:`zoo.backbones.capabilities` that the rest of the zoo asks with ``isinstance``: streaming
(:class:`~.capabilities.Streamable`), export (:class:`~.capabilities.Exportable`, with
:class:`~.capabilities.RealSTFTPath`), a chunked test protocol
(:class:`~.capabilities.TestProtocol`), data-initialised input statistics
(:class:`~.capabilities.InputStatistics`), an auxiliary loss
(:class:`~.capabilities.AuxiliaryLoss`), reading the true sources
(:class:`~.capabilities.NeedsSources`).

Adding a backbone (a checklist; nothing in ``zoo/run/`` changes, whatever it can do):

1. ``zoo/backbones/<name>.py``: the class, with typed ``__init__`` arguments whose docstring
   names the paper symbol and value of each (``<N=512>``), ``Shape:`` in the docstring, the
   capability mixins it has; a factory of the paper configuration.
2. ``zoo/backbones/__init__.py``: export it.
3. ``conf/backbone/<name>.yaml`` (paper) and ``conf/backbone/<name>_mini.yaml`` (mini).
4. ``recipes/<dataset>_<name>.yaml``: compose the fragments.
5. ``tests/unit/backbones/test_<name>.py``: shapes, gradients, the paper parameter count, and
   equality with the reference implementation where there is one (a converter in
   ``zoo/hub/convert.py`` and a row in ``zoo/hub/readers.py`` if its published weights load).
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError

__all__ = ["Backbone", "ContractError"]


class ContractError(UserError, TypeError):
    """A backbone that does not provide what the contract says."""


class Backbone(nn.Module):
    """Base class of every zoo backbone (see the module docstring for the contract)."""

    sample_rate: int
    n_src: int
    sources: list[str] | None = None
    audio_channels: int | None = None

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
