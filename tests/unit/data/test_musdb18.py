"""MUSDB18: the mini set's format and the datamodule."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import TINY_MUSDB
from zoo.data import musdb18 as musdb_mod
from zoo.data.libri2mix import DatasetNotFoundError
from zoo.data.mini import MARKER
from zoo.data.musdb18 import MUSDB18DataModule
from zoo.data.musdb_mini import SOURCES, MusdbMiniSpec, prepare_musdb18_mini, render_track


def _track(root, subset, name):
    folder = root / subset / name
    return {s: sf.read(folder / f"{s}.wav", dtype="int16")[0] for s in ("mixture", *SOURCES)}


def test_mini_set_has_the_musdb18hq_layout_and_exact_mixtures(tiny_musdb):
    info = json.loads((tiny_musdb / MARKER).read_text())
    assert len(info["tracks"]["train"]) == TINY_MUSDB["n_train"] and info["valid"]
    name = info["tracks"]["test"][0]
    audio = _track(tiny_musdb, "test", name)
    sf_info = sf.info(tiny_musdb / "test" / name / "mixture.wav")
    assert sf_info.samplerate == 44100 and sf_info.channels == 2 and sf_info.subtype == "PCM_16"
    stems = sum(audio[s].astype(np.int32) for s in SOURCES)
    assert np.array_equal(audio["mixture"].astype(np.int32), stems)  # mixture = sum of the stems
    assert all(np.abs(audio[s]).max() > 0 for s in SOURCES)  # no silent stem (BSS Eval needs it)


def test_mini_set_is_deterministic(tmp_path):
    spec = MusdbMiniSpec(n_train=1, n_valid=0, n_test=1, seconds=1.0, with_stempeg_example=False)
    a = prepare_musdb18_mini(tmp_path / "a", spec)
    b = prepare_musdb18_mini(tmp_path / "b", spec)
    for sub in ("train", "test"):
        for f in sorted((a / sub).rglob("*.wav")):
            assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()
    stems = render_track(1.0, np.random.default_rng(1))
    assert set(stems) == set(SOURCES) and all(v.shape == (44100, 2) for v in stems.values())


def test_datamodule_split_augmentation_and_eval_items(tiny_musdb):
    dm = MUSDB18DataModule(
        root=str(tiny_musdb),
        setup_file="mini_setup.yaml",
        segment=1.0,
        samples_per_track=2,
        batch_size=2,
    )
    dm.setup(None)
    info = json.loads((tiny_musdb / MARKER).read_text())
    valid = {t.name for t in dm.val_set.tracks}
    assert valid == set(info["valid"])
    assert {t.name for t in dm.train_set.tracks} == set(info["tracks"]["train"]) - valid
    assert len(dm.train_set) == 2 * len(dm.train_set.tracks)
    item = dm.train_set[0]
    assert item["mix"].shape == (2, 44100) and item["ref"].shape == (4, 2, 44100)
    torch.testing.assert_close(item["mix"], item["ref"].sum(0))  # augmented sources add up
    test = dm.test_set[0]
    assert test["sources"].shape[:2] == (4, 2) and test["mix"].shape == test["sources"].shape[1:]
    dm = MUSDB18DataModule(root=str(tiny_musdb), targets=["vocals", "accompaniment"])
    dm.setup("test")
    item = dm.test_set[0]
    full = MUSDB18DataModule(root=str(tiny_musdb))
    full.setup("test")
    src = full.test_set[0]["sources"]  # vocals, drums, bass, other
    torch.testing.assert_close(item["sources"][1], src[1:].sum(0))


def test_datamodule_errors_name_what_is_missing(tiny_musdb, tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=r"no MUSDB18 'train' folder under .*nowhere"):
        MUSDB18DataModule(root=str(tmp_path / "nowhere")).setup("fit")
    with pytest.raises(ValueError, match=r"unknown MUSDB18 targets \['voice'\]"):
        MUSDB18DataModule(targets=["voice"])
    (tmp_path / "stems" / "test").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"no tracks .*\*\.stem\.mp4"):
        MUSDB18DataModule(root=str(tmp_path / "stems"), is_wav=False).setup("test")
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "ffprobe" else "/bin/x")
    with pytest.raises(RuntimeError, match="needs ffprobe on PATH .*install ffmpeg"):
        musdb_mod.require_ffmpeg()


def test_datamodule_names_a_broken_audio_file(tiny_musdb, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_musdb, root)
    track = json.loads((root / MARKER).read_text())["tracks"]["test"][0]
    (root / "test" / track / "bass.wav").write_bytes(b"not audio")
    dm = MUSDB18DataModule(root=str(root))
    with pytest.raises(Exception, match=rf"{track}.*bass\.wav"):
        dm.setup("test")
        for i in range(len(dm.test_set)):
            dm.test_set[i]


def test_random_channel_gives_mono_items_one_random_channel_per_source(tiny_musdb):
    """Meta-TasNet's training: each source of a mono item is one channel of its stereo stem."""
    dm = MUSDB18DataModule(
        root=str(tiny_musdb),
        setup_file="mini_setup.yaml",
        segment=0.5,
        samples_per_track=4,
        random_track_mix=False,
        gain_range=None,
        channel_swap=False,
        random_channel=True,
    )
    dm.setup("fit")
    assert (dm.audio_channels, dm.train_channels) == (2, 1)  # evaluation stays stereo
    assert dm.val_set[0]["mix"].shape[0] == 2
    picked, stems = set(), {}
    for i in range(4):
        item = dm.train_set[i]
        assert item["mix"].shape == (1, 22050) and item["ref"].shape == (4, 1, 22050)
        torch.testing.assert_close(item["mix"], item["ref"].sum(0))
        track = dm.train_set.tracks[i // 4]
        for s, mono in zip(dm.targets, item["ref"][:, 0].numpy(), strict=True):
            if (track.name, s) not in stems:
                stems[track.name, s] = sf.read(track.sources[s].path, dtype="float32")[0].T
            stem = stems[track.name, s]  # (2, T)
            k = int(np.abs(mono[:-64]).argmax())  # a loud stretch: few chance matches
            window = np.lib.stride_tricks.sliding_window_view(stem, 64, axis=1)
            hits = np.argwhere((window == mono[k : k + 64]).all(-1))  # (channel, offset)
            channels = {
                int(c)
                for c, o in hits
                if o >= k and np.array_equal(stem[c, o - k : o - k + 22050], mono)
            }
            assert len(channels) == 1, f"{s} of item {i} is not one channel of its stem"
            picked |= channels
    assert picked == {0, 1}  # both channels get drawn


def test_zoo_prepare_musdb18_check_names_a_mini_tree_and_a_truncated_stem(tiny_musdb, tmp_path,
                                                                          capsys):  # fmt: skip
    import shutil

    import soundfile as sf

    from zoo.cli import main

    assert main(["prepare", "musdb18", "--root", str(tiny_musdb), "--check"]) == 2
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "not a full copy" in out
    assert "(the built-in mini set)" in out and "problem(s)" in err
    assert main(["prepare", "musdb18", "--root", str(tiny_musdb)]) == 2  # --check is the step
    capsys.readouterr()
    copy = tmp_path / "MUSDB18-HQ"
    shutil.copytree(tiny_musdb, copy)
    track = sorted((copy / "test").iterdir())[0]
    x, rate = sf.read(track / "bass.wav")
    sf.write(track / "bass.wav", x[: len(x) // 2], rate)  # a truncated stem
    assert main(["prepare", "musdb18", "--root", str(copy), "--check"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(f"test/{track.name}" in line and "bass" in line and "truncated" in line
               for line in lines)  # fmt: skip
