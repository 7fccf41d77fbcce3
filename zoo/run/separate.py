"""``zoo separate``: audio files of any length through a loadable model."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["separate_file"]


def separate_file(
    model: str,
    inputs: list[str],
    out_dir: str | Path,
    chunk_seconds: float | None = 8.0,
    overlap: float = 0.25,
    download: bool = False,
    overwrite: bool = False,
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
        quiet: no progress bar.
    """
    import soundfile as sf
    from tqdm import tqdm

    from ..data.audio import load_audio
    from ..hub.api import load

    sep = load(model, download=download)
    out = Path(out_dir)
    written = []
    for path in map(Path, inputs):
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        targets = [out / f"{path.stem}_{name}.wav" for name in sep.sources]
        clash = [str(t) for t in targets if t.exists()]
        if clash and not overwrite:
            raise FileExistsError(f"would overwrite {', '.join(clash)} (pass --overwrite)")
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
            tmp = target.with_suffix(".part.wav")
            with sf.SoundFile(str(tmp), "w", sr, n_channels, subtype="FLOAT") as f:
                for piece in sep.restore(e, sr, n_frames, n_channels):  # block by block
                    f.write(piece.T.contiguous().numpy())
            os.replace(tmp, target)
            written.append(target)
    return written
