"""``zoo export-onnx`` / ``zoo export-torchscript``: a model for deployment runtimes.

The graph takes ``mixture``, a ``(B, C, T)`` float32 waveform at the model's sample rate, and
returns ``sources``, ``(B, S, C, T)``; batch and length are dynamic axes. It is the backbone's
``forward`` only: resampling, chunking of long files and channel handling stay with the caller
(``zoo separate`` does them for PyTorch models). The model's sample rate, output names and
architecture are stored in the graph's metadata (``metadata_props``).

Export goes through ``torch.onnx.export(dynamo=True)`` (torch.export, then the ONNX translation)
and, where torch.export cannot yet trace the network with a dynamic length (Open-Unmix's LSTM),
the TorchScript tracer. Every graph is run in onnxruntime on inputs of other batch sizes and
lengths than the example and compared with PyTorch's own path (complex STFT) before it is kept
(``max_abs_error`` in the returned record; over ``tolerance``, or a graph that kept the example's
shapes, and the file is not written). Spectrogram networks run their STFT as real-valued
convolutions in the graph (:class:`zoo.dsp.RealSTFT`: ONNX has no complex tensors). What exports
is said by each backbone (its :class:`~zoo.backbones.capabilities.Exportable` capability: the
export form, the exporters to try, a graph of one clip, or a one-line refusal); nothing here
names a class. Today (README, "Export"): Conv-TasNet, TDCN++, the spectrogram U-Net, Open-Unmix
without its Wiener EM (recorded in the graph's ``zoo.notes``), and AudioSlots as a graph of one
clip (its ``export_chunk`` samples: the time axis is fixed, the caller cuts and joins clips, as
the blind protocol does); Meta-TasNet and the slot-carrying AudioSlots refuse in one line.

``zoo export-torchscript`` writes the same networks as TorchScript files (``torch.jit.trace`` of
the same export form, checked the same way), loadable with ``torch.jit.load`` alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["ExportError", "export_onnx", "export_torchscript"]


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


def _prepare(model: str, out: str | Path, suffix: str, overwrite: bool):
    """Checks shared by the export formats, then the loaded backbone in its export form, the
    traced example and the check inputs with PyTorch's own outputs for them."""
    from ..backbones.capabilities import Exportable, ExportRefused, NeedsSources, RealSTFTPath
    from ..hub.api import load

    out = Path(out)
    if out.suffix != suffix:
        raise ExportError(f"{out}: the output file must end in {suffix}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists: pass --overwrite to replace it, or choose another -o")
    sep = load(model)
    backbone = sep.backbone.eval()
    kind = type(backbone).__name__
    if isinstance(backbone, NeedsSources):
        raise ExportError(
            f"{model}: {kind} reads the true sources (a reference row): nothing to deploy"
        )
    if not isinstance(backbone, Exportable):
        raise ExportError(
            f"{model}: {backbone.architecture} has no export form (its class does not declare "
            "the Exportable capability, zoo/backbones/capabilities.py)"
        )
    try:  # the backbone's export form (Open-Unmix: without its Wiener EM), or its refusal
        notes = backbone.export_form()
    except ExportRefused as exc:
        raise ExportError(f"{model}: {exc}") from None
    chunk = backbone.export_chunk
    if chunk:
        notes.append(f"one clip of {chunk} samples per graph run (time axis fixed); cut inputs "
                     "into clips and join them in the caller")  # fmt: skip
    channels = sep.audio_channels or 1
    gen = torch.Generator().manual_seed(0)
    # batch 2 and 1.5 s: torch.export specialises sizes 0 and 1, so the example avoids them
    example = torch.randn(2, channels, chunk or int(1.5 * sep.sample_rate), generator=gen)
    # checked on other batches and lengths than the example's: a graph that kept the example's
    # shapes fails here (a clip graph keeps its length and is checked on other batches)
    checks = [torch.randn(b, channels, chunk or int(f * sep.sample_rate) + 7, generator=gen)
              for b, f in ((1, 1.3), (3, 0.7))]  # fmt: skip
    with torch.no_grad():  # PyTorch's own path (complex STFT), before the export switch
        wants = [backbone(x) for x in checks]
    if isinstance(backbone, RealSTFTPath):  # ONNX has no complex tensors; one path for both
        backbone.use_real_stft()
    meta = {
        "zoo.sample_rate": str(sep.sample_rate),
        "zoo.sources": ",".join(sep.sources),
        "zoo.architecture": backbone.architecture,
        "zoo.audio_channels": str(sep.audio_channels or "any"),
        "zoo.notes": "; ".join(notes),
        "zoo.chunk": str(chunk or ""),
    }
    return out, sep, backbone, kind, notes, example, checks, wants, meta


@contextmanager
def _written(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out`` (named after this process) that becomes ``out`` when the
    block ends without an error; it is removed in any case. Nothing else is touched."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _record(out: Path, sep, backbone, exporter: str, notes, err: float, checks) -> dict:
    return {
        "path": str(out),
        "sample_rate": sep.sample_rate,
        "sources": list(sep.sources),
        "architecture": backbone.architecture,
        "exporter": exporter,
        "notes": notes,
        "max_abs_error": err,
        "checked_shapes": [list(x.shape) for x in checks],
    }


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
            outputs on random inputs of other batch sizes and lengths than the traced one.
        overwrite: replace ``out`` if it exists (never done otherwise).
        opset: ONNX opset version.

    Returns:
        ``path``, ``sample_rate``, ``sources``, ``architecture``, ``exporter`` (``dynamo`` or
        ``torchscript``), ``notes`` (what the graph leaves out), ``max_abs_error``,
        ``checked_shapes``.
    """
    _needs()
    import onnx

    out, sep, backbone, kind, notes, example, checks, wants, meta = _prepare(
        model, out, ".onnx", overwrite
    )
    reasons = []
    with _written(out) as tmp:
        for exporter in backbone.exporters:
            try:  # a graph onnxruntime cannot load counts as a failed export
                _export(backbone, example, tmp, exporter, opset)
                runner = _onnx_runner(tmp)
            except Exception as exc:  # noqa: BLE001 - the next exporter is tried, then reported
                reasons.append(f"{exporter}: {type(exc).__name__}: {_first_line(exc)}")
                continue
            err, why = _compare(runner, checks, wants, tolerance)
            if why is None:
                break
            reasons.append(f"{exporter}: {why}")
        else:
            raise ExportError(f"{model}: {kind} did not export: {'; '.join(reasons)}")
        graph = onnx.load(str(tmp))
        for key, value in {**meta, "zoo.exporter": exporter}.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
    return _record(out, sep, backbone, exporter, notes, err, checks)


def export_torchscript(
    model: str, out: str | Path, tolerance: float = 1e-4, overwrite: bool = False
) -> dict:
    """Export a model as a TorchScript file (``torch.jit.trace``), checked against PyTorch.

    The file runs without the zoo (``torch.jit.load(path)(mixture)``: ``(B, C, T)`` →
    ``(B, S, C, T)``); the rate, sources and notes are in its ``zoo.json`` extra file.

    Args:
        model: what ``zoo.load`` takes: a zoo model folder, a peer's checkpoint, a registry name.
        out: the ``.pt`` file to write.
        tolerance: largest absolute difference allowed between the traced and the original
            module on random inputs of other batch sizes and lengths than the traced one.
        overwrite: replace ``out`` if it exists (never done otherwise).

    Returns:
        as :func:`export_onnx`, ``exporter`` = ``torchscript``.
    """
    import json
    import warnings

    out, sep, backbone, kind, notes, example, checks, wants, meta = _prepare(
        model, out, ".pt", overwrite
    )
    with _written(out) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's chatter and TorchScript's deprecation
            traced = torch.jit.trace(backbone, (example,), check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={"zoo.json": json.dumps(meta)})
            loaded = torch.jit.load(str(tmp))
        err, why = _compare(lambda x: loaded(x).numpy(), checks, wants, tolerance)
        if why is not None:
            raise ExportError(f"{model}: {kind} did not export: torchscript: {why}")
    return _record(out, sep, backbone, "torchscript", notes, err, checks)


def _export(backbone, example, path: Path, exporter: str, opset: int) -> None:
    """Write the ONNX graph of ``backbone`` traced on ``example`` with dynamic batch and time
    (batch only for a clip graph, ``export_chunk``): ``dynamo`` (torch.export, then the ONNX
    translation), or the older TorchScript tracer, which handles what torch.export cannot yet
    (an LSTM over a dynamic length)."""
    import warnings

    names = dict(input_names=["mixture"], output_names=["sources"], opset_version=opset)
    fixed = bool(backbone.export_chunk)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter
        if exporter == "dynamo":
            from torch.export import Dim

            dims = {0: Dim("batch")}
            if not fixed:
                dims[2] = Dim("time", min=backbone.export_min_length)
            program = torch.onnx.export(
                backbone,
                (example,),
                dynamic_shapes=(dims,),
                dynamo=True,
                verbose=False,
                **names,
            )
            program.save(str(path))
        else:
            axes = {"mixture": {0: "batch"}, "sources": {0: "batch"}}
            if not fixed:
                axes["mixture"][2] = axes["sources"][3] = "time"
            torch.onnx.export(
                backbone, (example,), str(path), dynamic_axes=axes, dynamo=False, **names
            )


def _onnx_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["sources"], {"mixture": x.numpy()})[0]


def _compare(run, checks, wants, tolerance: float) -> tuple[float, str | None]:
    """Largest difference between the exported module (``run``: tensor in, array out) and
    PyTorch over the check inputs, and why it is refused (``None``: it is not)."""
    try:
        with torch.no_grad():
            gots = [run(x) for x in checks]
    except Exception as exc:  # noqa: BLE001 - a graph that does not run is refused
        return float("inf"), f"it fails on another shape: {_first_line(exc)}"
    err = 0.0
    for x, got, want in zip(checks, gots, wants, strict=True):
        got = torch.from_numpy(got)
        if got.shape != want.shape:
            return float("inf"), (
                f"it gives {tuple(got.shape)} for {tuple(x.shape)}, PyTorch {tuple(want.shape)}"
            )
        err = max(err, float((got - want).abs().max()))
    if err > tolerance:
        return err, f"it differs from PyTorch by {err:.2e} (> --tolerance {tolerance:g})"
    return err, None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:200]
