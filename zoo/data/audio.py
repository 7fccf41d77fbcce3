"""Checked audio file reading: every error names the file at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

__all__ = ["read_audio", "load_audio", "AudioError"]


class AudioError(ValueError):
    """An audio file that cannot be used as it is (missing, wrong rate, non-finite)."""


def read_audio(
    path: str | Path,
    sample_rate: int,
    start: int = 0,
    stop: int | None = None,
    context: str = "",
) -> torch.Tensor:
    """Read ``path[start:stop]`` as a float32 ``(channels, time)`` tensor.

    Raises:
        AudioError: the file is missing or unreadable, its sample rate is not ``sample_rate``,
            or it holds NaN/Inf. The message names the file (and ``context``, e.g. a CSV row).
    """
    return load_audio(path, sample_rate, start, stop, context)[0]


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    start: int = 0,
    stop: int | None = None,
    context: str = "",
) -> tuple[torch.Tensor, int]:
    """Like :func:`read_audio`, returning ``(audio, rate)``; ``sample_rate=None`` takes any rate."""
    path = Path(path)
    where = f" ({context})" if context else ""
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}{where}")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            if sample_rate is not None and rate != sample_rate:
                raise AudioError(
                    f"{path}{where}: sample rate is {f.samplerate} Hz, expected {sample_rate} Hz"
                )
            if start > f.frames:
                raise AudioError(
                    f"{path}{where}: has {f.frames} samples, cannot read from sample {start}"
                )
            if start:
                f.seek(start)
            frames = -1 if stop is None else stop - start
            data = f.read(frames, dtype="float32", always_2d=True)  # (time, channels)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        raise AudioError(f"cannot read audio file {path}{where}: {exc}") from exc
    if not np.isfinite(data).all():
        raise AudioError(f"{path}{where}: contains NaN or Inf samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate
