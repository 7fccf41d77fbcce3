"""``zoo separate``: files of any rate and channel count through a loadable model."""

import shutil

import soundfile as sf
import torch

from zoo.cli import main
from zoo.hub import registry


def test_zoo_separate_cli_writes_one_file_per_source(tmp_path):
    wav = torch.randn(2, 44100).numpy() * 0.1  # stereo at 44.1 kHz into an 8 kHz model
    sf.write(tmp_path / "in.wav", wav.T, 44100)
    shutil.copytree(
        registry._source_url("package:tiny/convtasnet-tiny-random")[7:], tmp_path / "model"
    )
    args = [
        "separate",
        str(tmp_path / "model"),
        str(tmp_path / "in.wav"),
        "-o",
        str(tmp_path / "out"),
        "--chunk",
        "0.5",
    ]
    assert main(args) == 0
    for s in ("s1", "s2"):
        y, sr = sf.read(tmp_path / "out" / f"in_{s}.wav")
        assert sr == 44100 and y.shape == (44100, 2)
    assert main(args) == 2  # refuses to overwrite
    assert main([*args, "--overwrite"]) == 0
