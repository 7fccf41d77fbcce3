"""``zoo export-onnx``: a model as an ONNX graph for deployment runtimes.

The graph takes ``mixture``, a ``(B, C, T)`` float32 waveform at the model's sample rate, and
returns ``sources``, ``(B, S, C, T)``; batch and length are dynamic axes. It is the backbone's
``forward`` only: resampling, chunking of long files and channel handling stay with the caller
(``zoo separate`` does them for PyTorch models). The model's sample rate, output names and
architecture are stored in the graph's metadata (``metadata_props``).

Export goes through ``torch.onnx.export(dynamo=True)`` (torch.export, then the ONNX translation);
the exported graph is then run in onnxruntime on an input of another length than the example and
compared with PyTorch (``max_abs_error`` in the returned record; over ``tolerance`` the file is
not kept). What exports today (README, "Export"): Conv-TasNet, TDCN++ and the spectrogram U-Net
(its STFT as real-valued convolutions, :class:`zoo.dsp.RealSTFT`: ONNX has no complex tensors).
Open-Unmix, AudioSlots and Meta-TasNet do not yet: torch.export specialises their
length-dependent code (STFT framing, chunking, resampling), and each refuses in one line here
instead of writing a graph that only runs at the example's length.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["ExportError", "export_onnx", "EXPORTABLE"]

# backbone class -> why not, for those that do not export yet (checked before any tracing)
NOT_YET = {
    "OpenUnmix": "torch.export specialises its batch and length (STFT framing and the LSTM layout)",
    "AudioSlots": "torch.export specialises its length (clip chunking and slot alignment)",
    "AudioSlotsCarry": "torch.export specialises its length (clip chunking)",
    "MetaTasNet": "torch.export specialises its length (the stages' resampling and padding)",
}
EXPORTABLE = ("ConvTasNet", "SpectrogramUNet")  # Conv-TasNet and TDCN++ are one class


class ExportError(ValueError):
    """A model that cannot be exported, or an export that does not match PyTorch."""


def _needs():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"zoo export-onnx needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
            "pip install 'separation-zoo[export]'"
        ) from None


def export_onnx(
    model: str,
    out: str | Path,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    opset: int = 18,
) -> dict:
    """Export a model as ONNX and check the graph against PyTorch in onnxruntime.

    Args:
        model: what ``zoo.load`` takes: a zoo model folder, a peer's checkpoint, a registry name.
        out: the ``.onnx`` file to write.
        tolerance: largest absolute difference allowed between onnxruntime's and PyTorch's
            outputs on a random input of another length than the traced one.
        overwrite: replace ``out`` if it exists (never done otherwise).
        opset: ONNX opset version.

    Returns:
        ``path``, ``sample_rate``, ``sources``, ``architecture``, ``max_abs_error``,
        ``checked_shape``.
    """
    from ..hub.api import load

    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the output file must end in .onnx")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists: pass --overwrite to replace it, or choose another -o")
    sep = load(model)
    backbone = sep.backbone.eval()
    kind = type(backbone).__name__
    if backbone.needs_sources:
        raise ExportError(
            f"{model}: {kind} reads the true sources (a reference row): nothing to deploy"
        )
    if kind not in EXPORTABLE:
        why = NOT_YET.get(kind, "it is not among the backbones checked for export")
        raise ExportError(
            f"{model}: {kind} does not export to ONNX yet: {why}; exportable: Conv-TasNet, "
            "TDCN++, U-Net"
        )
    if hasattr(backbone, "use_real_stft"):  # ONNX has no complex tensors
        backbone.use_real_stft()
    _needs()
    import onnx
    import onnxruntime as ort
    from torch.export import Dim

    channels = sep.audio_channels or 1
    gen = torch.Generator().manual_seed(0)
    # batch 2 and 1.5 s: torch.export specialises sizes 0 and 1, so the example avoids them
    example = torch.randn(2, channels, int(1.5 * sep.sample_rate), generator=gen)
    shapes = ({0: Dim("batch"), 2: Dim("time", min=max(64, 4 * _min_length(backbone)))},)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                backbone,
                (example,),
                input_names=["mixture"],
                output_names=["sources"],
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        program.save(str(tmp))
        graph = onnx.load(str(tmp))
        meta = {
            "zoo.sample_rate": str(sep.sample_rate),
            "zoo.sources": ",".join(sep.sources),
            "zoo.architecture": backbone.architecture,
            "zoo.audio_channels": str(sep.audio_channels or "any"),
        }
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
        check = torch.randn(1, channels, int(1.3 * sep.sample_rate) + 7, generator=gen)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["sources"], {"mixture": check.numpy()})[0])
        with torch.no_grad():
            want = backbone(check)
        if got.shape != want.shape:
            raise ExportError(
                f"{model}: the ONNX graph gives {tuple(got.shape)} for {tuple(check.shape)}, "
                f"PyTorch {tuple(want.shape)}: not written"
            )
        err = float((got - want).abs().max())
        if err > tolerance:
            raise ExportError(
                f"{model}: onnxruntime differs from PyTorch by {err:.2e} (> --tolerance "
                f"{tolerance:g}): not written"
            )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(out),
        "sample_rate": sep.sample_rate,
        "sources": list(sep.sources),
        "architecture": backbone.architecture,
        "max_abs_error": err,
        "checked_shape": list(check.shape),
    }


def _min_length(backbone) -> int:
    """The shortest input the network's framing takes (its encoder kernel)."""
    return int(getattr(backbone, "kernel_size", 1))
