"""MUSDB18: the mini set's format, the datamodule, and BSS Eval v4 against museval."""

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
from zoo.eval.bsseval import bss_eval_v4, xcorr_lags
from zoo.system import summarize_bss


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


def test_xcorr_lags_equal_direct_correlation():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 1000)), rng.standard_normal((3, 1000))
    out = xcorr_lags(x, y, 7, block=128)
    for m in (-7, -2, 0, 5, 7):
        direct = np.array(
            [
                [
                    np.dot(x[p, max(0, -m) : 1000 - max(0, m)], y[q, max(0, m) : 1000 + min(0, m)])
                    for q in range(3)
                ]
                for p in range(2)
            ]
        )
        np.testing.assert_allclose(out[:, :, 7 + m], direct, atol=1e-9)


def _museval(ref, est, rate):
    museval = pytest.importorskip("museval")
    return dict(
        zip(
            ("sdr", "isr", "sir", "sar"),
            museval.evaluate(ref, est, win=rate, hop=rate, mode="v4"),
            strict=True,
        )
    )


def test_bss_eval_v4_equals_museval_on_mini_test_tracks(tiny_musdb):
    # Estimates with interference, filtering and artefacts; one estimate silent for a second so
    # museval's NaN windows are covered. Per-target medians within 0.05 dB (the bar);
    # framewise values agree to ~1e-10 dB in practice.
    rng = np.random.default_rng(0)
    info = json.loads((tiny_musdb / MARKER).read_text())
    tracks = [("test", t) for t in info["tracks"]["test"]]
    if info["stempeg_example"]:
        tracks.append(("test", info["stempeg_example"]))
    for subset, name in tracks:
        audio = {
            k: v.astype(np.float64) / 32768 for k, v in _track(tiny_musdb, subset, name).items()
        }
        ref = np.stack([audio[s] for s in SOURCES])  # (S, T, C)
        mixing = np.eye(4) + 0.2 * rng.random((4, 4))
        est = np.einsum("ij,jtc->itc", mixing, ref)
        est[:, 1:] = 0.7 * est[:, 1:] + 0.3 * est[:, :-1]  # a filter
        est += 0.01 * rng.standard_normal(est.shape)  # artefacts
        est[2, 44100:88200] = 0
        ours = bss_eval_v4(ref, est)
        peer = _museval(ref, est, 44100)
        for m in ("sdr", "isr", "sir", "sar"):
            assert np.array_equal(np.isnan(ours[m]), np.isnan(peer[m])), (name, m)
            np.testing.assert_allclose(
                np.nanmedian(ours[m], 1), np.nanmedian(peer[m], 1), atol=0.05, err_msg=f"{name} {m}"
            )


def test_bss_eval_v4_known_values_and_errors():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((2, 3 * 4410, 2))
    noise = rng.standard_normal(ref.shape)
    est = ref + 0.1 * noise  # SDR = 10 log10(|s|^2 / |0.1 n|^2) ~ 20 dB per window
    out = bss_eval_v4(ref, est, win=4410, hop=4410)
    expect = 10 * np.log10(
        (ref[:, :4410] ** 2).sum((1, 2)) / ((0.1 * noise[:, :4410]) ** 2).sum((1, 2))
    )
    np.testing.assert_allclose(out["sdr"][:, 0], expect, atol=1e-9)
    assert out["sdr"].shape == (2, 3)
    perfect = bss_eval_v4(ref, ref.copy(), win=4410, hop=4410)
    assert np.isinf(perfect["sdr"]).all() and (perfect["sir"] > 100).all()
    ref[1] = 0
    with pytest.raises(ValueError, match="reference of bass is silent"):
        bss_eval_v4(ref, est, names=["drums", "bass"])
    with pytest.raises(ValueError, match=r"\(sources, time, channels\)"):
        bss_eval_v4(ref, est[:1])


def test_summary_is_median_over_tracks_then_mean_over_targets():
    rows = [
        {
            "sdr_a": 1.0,
            "isr_a": 0,
            "sir_a": 0,
            "sar_a": 0,
            "sdr_b": 5.0,
            "isr_b": 0,
            "sir_b": 0,
            "sar_b": 0,
        },
        {
            "sdr_a": 3.0,
            "isr_a": 0,
            "sir_a": 0,
            "sar_a": 0,
            "sdr_b": float("nan"),
            "isr_b": 0,
            "sir_b": 0,
            "sar_b": 0,
        },
        {
            "sdr_a": 10.0,
            "isr_a": 0,
            "sir_a": 0,
            "sar_a": 0,
            "sdr_b": 7.0,
            "isr_b": 0,
            "sir_b": 0,
            "sar_b": 0,
        },
    ]
    out = summarize_bss(rows, ["a", "b"])
    assert out["targets"]["a"]["sdr"] == 3.0 and out["targets"]["b"]["sdr"] == 6.0
    assert out["sdr"] == 4.5


def test_zoo_evaluate_scores_a_converted_openunmix_on_musdb(tiny_musdb, tmp_path):
    # The Open-Unmix folder made by the real package (16 kHz, vocals + accompaniment): the data
    # are resampled to its rate and scored per target with the museval-equivalent metrics.
    from tests.conftest import FIXTURES
    from zoo.cli import main

    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(FIXTURES / "openunmix_tiny"),
                "--data",
                str(tiny_musdb),
                "-o",
                str(out),
                "--limit",
                "1",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "MUSDB18-HQ" and metrics["sample_rate"] == 16000
    assert set(metrics["targets"]) == {"accompaniment", "vocals"} and metrics["n_items"] == 1
    assert metrics["mini"] is True and metrics["macs_per_second"] > 0
    assert all(np.isfinite(metrics["targets"][t]["sdr"]) for t in metrics["targets"])
    bad = tmp_path / "bad"
    assert (
        main(
            [
                "evaluate",
                "convtasnet-tiny-random",
                "--data",
                str(tiny_musdb),
                "-o",
                str(bad),
                "--download",
            ]
        )
        == 2
    )  # anonymous outputs s1, s2 are not MUSDB18 targets


def test_bss_eval_scores_a_silent_estimate_instead_of_failing():
    # museval refuses an all-zero estimate; a model that outputs silence for a target must still
    # be scored: SDR 0 dB (the error is the reference itself), no ISR/SIR/SAR, others unchanged.
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, 3 * 4410, 2))
    est = ref + 0.3 * rng.standard_normal(ref.shape)
    full = bss_eval_v4(ref, est, win=4410, hop=4410)
    est[1] = 0
    with pytest.raises(ValueError, match="estimate of s1 is silent"):
        bss_eval_v4(ref, est, win=4410, hop=4410, names=["s0", "s1", "s2"])
    out = bss_eval_v4(ref, est, win=4410, hop=4410, silent_estimates="score")
    np.testing.assert_allclose(out["sdr"][1], 0.0, atol=1e-9)
    assert np.isnan(out["sir"][1]).all() and np.isnan(out["sar"][1]).all()
    np.testing.assert_allclose(out["sdr"][[0, 2]], full["sdr"][[0, 2]], atol=1e-9)
    assert np.isfinite(out["sir"][[0, 2]]).all()
