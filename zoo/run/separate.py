"""``zoo separate``: audio files of any length through a loadable model.

Everything that can be checked is checked before anything is separated: every input is a
readable, non-empty audio file, no two inputs would write the same output file, the output
folder can be written, existing outputs are kept unless ``--overwrite``, and each input's
channels fit the model, and no output is also an input. Outputs are written to temporary files
renamed into place; a failure, Ctrl-C or SIGTERM removes the partial file.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["SeparateError", "separate_file"]


class SeparateError(ValueError):
    """An input or output that cannot be used as it is."""


def _channel_plan(model_channels: int | None, channels: int, path: Path) -> str:
    """How an input's channels map to the model's, in words; refuses what does not fit."""
    if model_channels is None:
        return f"{channels} channel(s), each separated on its own"
    if model_channels == channels:
        return f"{channels} channel(s), as the model takes"
    if model_channels == 1:
        return f"{channels} channels averaged to mono (the model takes 1 channel)"
    if channels == 1:
        return f"mono duplicated to the model's {model_channels} channels, outputs averaged to mono"
    raise SeparateError(
        f"{path}: {channels} channels, but the model takes {model_channels}: mix the file down "
        f"to {model_channels} channels (or mono) first, e.g. with ffmpeg -ac {model_channels}"
    )


@contextmanager
def _sigterm_raises(what: str) -> Iterator[None]:
    """SIGTERM raises :class:`~zoo.run.checkpoints.Interrupted` (exit status 143) instead of
    ending the process on the spot, so that partial outputs are removed as on Ctrl-C."""
    from .checkpoints import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(f"{what} stopped by SIGTERM; no partial output was left: run it again")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def separate_file(
    model: str,
    inputs: list[str],
    out_dir: str | Path,
    chunk_seconds: float | None = 8.0,
    overlap: float = 0.25,
    download: bool = False,
    overwrite: bool = False,
    stream: bool = False,
    block_seconds: float = 0.01,
    quiet: bool = False,
) -> list[Path]:
    """Separate audio files of any length with a loadable model; writes
    ``<out>/<stem>_<source>.wav`` (float WAV at the input's rate and channel count).

    Args:
        model: a zoo model folder, a peer checkpoint or a registry name (``zoo list``).
        inputs: audio files (anything soundfile reads).
        out_dir: output folder.
        chunk_seconds: chunk length for overlap-add (``0`` or ``None``: one pass).
        overlap: fraction of a chunk shared with the next.
        download: fetch a registered model that is not in the cache yet.
        overwrite: replace existing output files.
        stream: run a causal model on the file as a stream (``zoo.stream``): blocks of
            ``block_seconds`` in, the ready output samples out, as a live input would be
            processed (the same output as the offline model; ``--chunk`` is not used).
        block_seconds: the block length read from the file with ``--stream``.
        quiet: no progress bar.
    """
    import soundfile as sf

    from ..backbones.capabilities import NeedsSources
    from ..hub.api import load

    sep = load(model, download=download)
    if isinstance(sep.backbone, NeedsSources):
        raise SeparateError(
            f"{model}: {type(sep.backbone).__name__} is a reference row that reads the true "
            "sources (forward(mix, sources)); it cannot separate a mixture file: separate with "
            "a separator such as the recipe it is the reference of"
        )
    if stream:
        from ..streaming import StreamError
        from ..streaming import stream as open_stream

        if block_seconds <= 0:
            raise SeparateError(f"--block-seconds must be > 0, got {block_seconds}")
        try:
            open_stream(sep)  # refuses a model that is not causal, before any file is read
        except StreamError as exc:
            raise SeparateError(f"{model}: {exc}") from exc
    out = Path(out_dir)
    plans, owners = [], {}
    sources = {Path(p).resolve() for p in inputs}
    for path in map(Path, inputs):
        if not path.is_file():
            raise SeparateError(f"input file not found: {path}")
        try:
            info = sf.info(str(path))
        except Exception as exc:  # soundfile's own error types
            raise SeparateError(f"cannot read audio file {path}: {exc}") from exc
        if info.frames == 0:
            raise SeparateError(f"{path}: holds no samples")
        targets = [out / f"{path.stem}_{name}.wav" for name in sep.sources]
        for t in targets:
            if t in owners:
                raise SeparateError(
                    f"{owners[t]} and {path} would both write {t}: separate them into "
                    "different output folders, or rename one"
                )
            owners[t] = path
            if t.resolve() in sources:
                raise SeparateError(
                    f"{t} is both an input and an output of this run (it would be replaced "
                    "before it is read): write the outputs into another folder with -o"
                )
        plans.append((path, targets, _channel_plan(sep.audio_channels, info.channels, path), info))
    if out.exists() and not out.is_dir():
        raise SeparateError(f"output folder {out} is a file")
    existing = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SeparateError(f"cannot write into {existing}: choose another output folder with -o")
    clash = [str(t) for t in owners if t.exists()]
    if clash and not overwrite:
        raise SeparateError(f"would overwrite {', '.join(clash)} (pass --overwrite)")

    with _sigterm_raises("zoo separate"):
        return _separate_all(sep, plans, out, chunk_seconds, overlap, stream, block_seconds, quiet)


def _separate_all(sep, plans, out: Path, chunk_seconds, overlap, stream, block_seconds, quiet):
    import soundfile as sf
    from tqdm import tqdm

    from ..data.audio import load_audio

    written = []
    for path, targets, plan, info in plans:
        if not quiet:
            print(f"[zoo] {path}: {plan}", flush=True)
        if stream:
            out.mkdir(parents=True, exist_ok=True)
            _separate_stream(sep, path, info, targets, block_seconds, quiet)
            written += targets
            continue
        wav, sr = load_audio(path)  # (C, T); names the file if unreadable or non-finite
        n_channels, n_frames = wav.shape
        bar = tqdm(total=n_frames, unit="sample", unit_scale=True, desc=path.name, disable=quiet)

        def progress(done, total, bar=bar, n=n_frames):
            bar.n = int(done / total * n)
            bar.refresh()

        x = sep.prepare(wav, sr)  # at the model's rate: the long input is freed next
        del wav
        est = sep.separate_prepared(x, chunk_seconds or None, overlap, progress)  # (S, C', t)
        bar.close()
        out.mkdir(parents=True, exist_ok=True)
        for target, e in zip(targets, est, strict=True):
            tmp = target.with_name(f".{target.stem}.part.wav")
            try:
                with sf.SoundFile(str(tmp), "w", sr, n_channels, subtype="FLOAT") as f:
                    for piece in sep.restore(e, sr, n_frames, n_channels):  # block by block
                        f.write(piece.T.contiguous().numpy())
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)  # never leave a partial output behind
                raise
            written.append(target)
    return written


def _separate_stream(
    sep, path: Path, info, targets: list[Path], block_seconds: float, quiet: bool
) -> None:
    """One file through a :class:`zoo.streaming.Stream`: read in blocks, resampled to the
    model's rate and back block by block, every output file written as its samples are ready."""
    import soundfile as sf
    from tqdm import tqdm

    from ..dsp import BlockResampler
    from ..streaming import stream as open_stream

    sr, n_channels, n_frames = info.samplerate, info.channels, info.frames
    model_channels = sep.prepare(torch.zeros(n_channels, 1), sep.sample_rate).shape[0]
    streamer = open_stream(sep, channels=model_channels)
    to_model = BlockResampler(sr, sep.sample_rate, model_channels)
    back = [BlockResampler(sep.sample_rate, sr, model_channels) for _ in targets]
    tmps = [t.with_name(f".{t.stem}.part.wav") for t in targets]
    done = [0] * len(targets)
    block = max(1, round(block_seconds * sr))
    bar = tqdm(total=n_frames, unit="sample", unit_scale=True, desc=path.name, disable=quiet)
    files = []

    def write(y: Tensor, last: bool = False) -> None:  # (S, C', k) at the model's rate
        for j, f in enumerate(files):
            piece = sep.to_channels(back[j](y[j], last=last), n_channels)
            piece = piece[:, : n_frames - done[j]]
            f.write(piece.T.contiguous().numpy())
            done[j] += piece.shape[-1]

    try:
        files = [sf.SoundFile(str(t), "w", sr, n_channels, subtype="FLOAT") for t in tmps]
        for raw in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
            if not np.isfinite(raw).all():  # as load_audio refuses for the offline path
                raise SeparateError(f"{path}: contains NaN or Inf samples")
            x = to_model(sep.prepare(torch.from_numpy(raw.T.copy()), sep.sample_rate))
            if x.shape[-1]:
                write(streamer.push(x))
            bar.update(raw.shape[0])
        x = to_model(torch.zeros(model_channels, 0), last=True)
        if x.shape[-1]:
            write(streamer.push(x))
        write(streamer.flush(), last=True)
        for j, f in enumerate(files):  # soxr's rounding may leave the last samples short
            if done[j] < n_frames:
                f.write(np.zeros((n_frames - done[j], n_channels), np.float32))
            f.close()
        for tmp, target in zip(tmps, targets, strict=True):
            os.replace(tmp, target)
    except BaseException:
        for f in files:
            f.close()
        for tmp in tmps:
            tmp.unlink(missing_ok=True)  # never leave a partial output behind
        raise
    finally:
        bar.close()
