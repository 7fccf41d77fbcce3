"""``zoo separate``: files of any rate and channel count through a loadable model."""

import shutil

import numpy as np
import pytest
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


def _model(tmp_path):
    folder = tmp_path / "model"
    if not folder.exists():
        src = registry._source_url("package:tiny/convtasnet-tiny-random")[7:]
        shutil.copytree(src, folder)
    return str(folder)


def _wav(path, channels=1, n=8000, rate=8000):
    sf.write(path, (torch.randn(n, channels) * 0.1).numpy(), rate)
    return str(path)


def test_inputs_and_outputs_are_checked_before_anything_is_separated(tmp_path, capsys):
    good = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    cases = {
        "input file not found": [good, str(tmp_path / "missing.wav")],
        "would both write": [good, _wav(tmp_path / "a.flac")],  # same stem: same outputs
        "cannot read audio file": [good, str(tmp_path / "junk.wav")],
        "holds no samples": [good, _wav(tmp_path / "empty.wav", n=0)],
    }
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    for what, inputs in cases.items():
        assert main(["separate", _model(tmp_path), *inputs, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert what in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()  # the good first file was not separated either
    (tmp_path / "file").write_text("x")
    assert main(["separate", _model(tmp_path), good, "-o", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    out, wav, model = tmp_path / "out", _wav(tmp_path / "a.wav"), _model(tmp_path)

    class FullDisk(sf.SoundFile):
        def write(self, data):
            super().write(data[: len(data) // 2])
            raise RuntimeError("Error writing: No space left on device")

    monkeypatch.setattr(sf, "SoundFile", FullDisk)
    assert main(["separate", model, wav, "-o", str(out)]) == 2
    assert list(out.iterdir()) == []  # neither the outputs nor their partial files


def test_channels_are_mapped_or_refused_in_words(tmp_path, capsys):
    from zoo.backbones import OpenUnmix
    from zoo.hub.folder import export_model

    six = _wav(tmp_path / "six.wav", channels=6)
    # channel-independent model: each channel separated on its own, and said so
    assert main(["separate", _model(tmp_path), six, "-o", str(tmp_path / "o1")]) == 0
    assert "6 channel(s), each separated on its own" in capsys.readouterr().out
    assert sf.info(str(tmp_path / "o1" / "six_s1.wav")).channels == 6
    # a stereo model refuses 6 channels before separating anything
    umx = OpenUnmix(["vocals", "drums"], 8000, 256, 64, 2, 16, 1)
    stereo = export_model(
        umx,
        {"class_path": "zoo.backbones.OpenUnmix",
         "init_args": {"sources": ["vocals", "drums"], "sample_rate": 8000, "n_fft": 256,
                       "hop": 64, "nb_channels": 2, "hidden_size": 16, "nb_layers": 1}},
        tmp_path / "umx",
    )  # fmt: skip
    assert main(["separate", str(stereo), six, "-o", str(tmp_path / "o2")]) == 2
    assert "6 channels, but the model takes 2" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    mono = _wav(tmp_path / "mono.wav")
    assert main(["separate", str(stereo), mono, "-o", str(tmp_path / "o3")]) == 0
    assert "mono duplicated to the model's 2 channels" in capsys.readouterr().out
    assert sf.info(str(tmp_path / "o3" / "mono_vocals.wav")).channels == 1


def test_zoo_separate_refuses_a_reference_row_that_reads_the_sources(tmp_path):
    from zoo.backbones import AudioSlotsAutoencoder
    from zoo.hub.folder import export_model
    from zoo.run.separate import SeparateError, separate_file

    backbone = AudioSlotsAutoencoder(sample_rate=8000)
    config = {"class_path": "zoo.backbones.AudioSlotsAutoencoder",
              "init_args": {"sample_rate": 8000}}  # fmt: skip
    export_model(backbone, config, tmp_path / "model")
    wav = tmp_path / "mix.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(SeparateError, match="reads the true sources"):
        separate_file(str(tmp_path / "model"), [str(wav)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_also_an_input_is_refused_whatever_the_flags(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    ok, mine = _wav(d / "ok.wav"), _wav(d / "ok_s1.wav")
    before = (d / "ok_s1.wav").read_bytes()
    assert main(["separate", _model(tmp_path), ok, mine, "-o", str(d), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is both an input and an output" in err and len(err.strip().splitlines()) == 1
    assert (d / "ok_s1.wav").read_bytes() == before and not (d / "ok_s2.wav").exists()


@pytest.mark.parametrize("stream", [False, True])
def test_sigterm_while_writing_exits_143_and_leaves_no_partial_file(stream, tmp_path, monkeypatch):
    import os
    import signal

    out = tmp_path / "out"
    model = "convtasnet-causal-tiny-random" if stream else _model(tmp_path)
    if stream:
        monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))

    class Terminated(sf.SoundFile):
        def write(self, data):
            super().write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a job scheduler would

    args = ["separate", model, _wav(tmp_path / "a.wav"), "-o", str(out)]
    monkeypatch.setattr(sf, "SoundFile", Terminated)
    assert main([*args, *(["--stream", "--download"] if stream else [])]) == 143
    assert list(out.iterdir()) == []  # neither the outputs nor their partial files
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back
