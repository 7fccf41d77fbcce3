"""BSS Eval v4 against museval, and museval's aggregation over tracks."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.data.mini import MARKER
from zoo.data.musdb_mini import SOURCES
from zoo.eval.bsseval import bss_eval_v4, xcorr_lags
from zoo.eval.metrics import summarize_bss


def _track(root, subset, name):
    folder = root / subset / name
    return {s: sf.read(folder / f"{s}.wav", dtype="int16")[0] for s in ("mixture", *SOURCES)}


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


@pytest.mark.parametrize("kind", ["positive definite", "indefinite"])
def test_the_gpu_solver_equals_the_cpu_one(kind):
    # the device path (torch.linalg, used on GPUs) against scipy's, on a matrix small enough for
    # torch's CPU solve to be right with several threads; a matrix that is not positive definite
    # takes the LU fallback on both
    from zoo.eval.bsseval import _solve

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 200))
    gram = x @ x.T
    if kind == "indefinite":
        gram = gram - np.diag(np.r_[np.zeros(60), np.full(4, 2 * np.abs(gram).sum(1).max())])
    gram, rhs = torch.from_numpy(gram), torch.from_numpy(rng.standard_normal((64, 3)))
    cpu = _solve(gram.clone(), rhs, linalg=False)
    dev = _solve(gram.clone(), rhs, linalg=True)
    assert cpu.dtype == dev.dtype == torch.float64
    torch.testing.assert_close(dev, cpu, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gram @ dev, rhs, rtol=1e-6, atol=1e-6)


def test_full_track_sdr_is_the_challenges_energy_ratio_over_the_whole_track():
    from zoo.eval.metrics import DEFINITIONS, full_track_sdr

    torch.manual_seed(0)
    ref = torch.randn(3, 2, 1000)  # (sources, channels, time)
    assert torch.allclose(full_track_sdr(0.5 * ref, ref), torch.full((3,), 20 * np.log10(2.0),
                          dtype=torch.float64), atol=1e-6)  # fmt: skip
    noise = torch.randn_like(ref)
    want = 10 * torch.log10(ref.double().square().sum((1, 2)) / noise.double().square().sum((1, 2)))
    assert torch.allclose(full_track_sdr(ref + noise, ref), want, atol=1e-6)
    assert full_track_sdr(ref, ref).min() > 100  # exact: bounded by the 1e-7 regulariser
    assert set(DEFINITIONS) == {"sdr", "usdr", "si_sdr"}
