"""The benchmark scripts' own paths (system tier), and `make rehearse` (marked ``slow``: 17
minutes, run by ``make test-all``, not by CI): every recipe's paper configuration runs the
whole path on generated data of the real shapes: training steps, whole-item validation, test,
export, zoo.load and zoo separate."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.run.recipe import available_recipes, load_recipe

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rehearse.py"


@pytest.mark.slow
def test_rehearsal_runs_every_recipe_at_paper_scale(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--no-write"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["recipe"]: r for r in report["rows"]}
    assert set(rows) == set(available_recipes())
    for name, r in rows.items():
        music = load_recipe(name).mini_dataset == "musdb18-mini"
        assert r["steps"] >= 2 and r["s_per_step"] > 0, name
        assert r["peak_train_gib"] > 0 and r["peak_val_gib"] > 0, name
        if music:  # a whole song validated, through the recipe's chunked evaluation
            assert r["val_item_s"] == pytest.approx(report["song_seconds"], abs=0.01), name
            assert r["test_item_s"] == pytest.approx(report["test_seconds"], abs=0.01), name
        else:  # a whole 20-35 s utterance tested
            assert r["test_item_s"] >= 20, name
        if (
            load_recipe(name)
            .merged(False)["model"]["backbone"]["class_path"]
            .endswith("Autoencoder")
        ):  # the reference row reads the true sources: zoo separate refuses it
            assert r["separate_s"] is None, name
        else:
            assert r["separated"] == len(r["sources"]) and r["separate_s"] > 0, name


@pytest.mark.system
def test_data_throughput_bench_reports_every_column(tmp_path):
    """`make bench-data` on one speech and one music recipe (augmented and plain MUSDB items), and
    Libri2Mix read from LibriSpeech on the fly and by dynamic mixing."""
    script = SCRIPT.parent / "data_throughput.py"
    cmd = [sys.executable, str(script), "--data", str(tmp_path), "--no-write", "--items", "2"]
    run = subprocess.run(
        [*cmd, "--repeats", "1", "--recipes", "libri2mix_pit", "musdb18_umx"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line.split(" (")[0]) for line in run.stdout.splitlines() if line[:1] == "{"]
    assert [r["recipe"] for r in rows] == [
        "libri2mix_pit",
        "musdb18_umx",  # and the two Libri2Mix paths without the generated tree:
        "libri2mix_pit, on the fly from LibriSpeech",
        "libri2mix_pit, dynamic mixing from LibriSpeech",
    ]
    for r in rows:
        assert r["items_per_s"] > 0 and r["gflops_per_item_fwd"] > 0 and r["workers"] >= 1
    assert rows[0]["segment_s"] == 3.0 and rows[1]["segment_s"] == 6.0  # the papers' segments
    assert rows[2]["segment_s"] == rows[3]["segment_s"] == 4.0  # LibriMix's paper datamodule
    assert "items_per_s_no_aug" in rows[1] and "items_per_s_no_aug" not in rows[0]


@pytest.mark.system
def test_music_bench_reports_every_model_beside_its_package():
    """`make bench-music` on a 1 s song: every model, the zoo's and the reference package's rows
    (a peer that is not installed is an error row, and the script exits 1)."""
    script = SCRIPT.parent / "music_models.py"
    cmd = [sys.executable, str(script), "--seconds", "1", "--repeats", "1", "--no-write"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    rows = [json.loads(line) for line in run.stdout.splitlines() if line[:1] == "{"]
    assert [(r["model"], r["impl"].split()[0]) for r in rows] == [
        ("convtasnet", "zoo"), ("openunmix", "zoo"), ("openunmix", "openunmix"),
        ("htdemucs", "zoo"), ("htdemucs", "demucs"), ("bsroformer", "zoo"),
        ("bsroformer", "bs-roformer"),
    ]  # fmt: skip
    for r in rows:
        if r["impl"] == "zoo" or "error" not in r:
            assert r["median_s"] > 0 and r["peak_mib"] > 0 and r["params"] > 0, r
    zoo = {r["model"]: r["params"] for r in rows if r["impl"] == "zoo"}
    assert zoo["htdemucs"] == 26_899_536 and zoo["bsroformer"] == 222_335_748
    for r in rows:  # the same network on both sides: the same parameter count
        if r["impl"] != "zoo" and "error" not in r:
            assert r["params"] == zoo[r["model"]], r
    assert run.returncode == (1 if any("error" in r for r in rows) else 0), run.stderr[-2000:]


@pytest.mark.system
def test_streaming_bench_reports_latency_and_rtf_per_block_size():
    """`make bench-stream` on a short input (5 s, so in the default suite): both
    configurations, every block size, and the streamed output equal to the offline model's."""
    script = SCRIPT.parent / "streaming.py"
    cmd = [sys.executable, str(script), "--seconds", "0.3", "--repeats", "1", "--no-write"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line[:1] == "{"]
    assert [(r["config"], r["name"]) for r in rows] == [
        (c, b) for c in ("mini", "paper") for b in ("1 hop", "10 ms", "12.3 ms", "100 ms")
    ]
    for r in rows:
        assert r["rtf"] > 0 and r["max_abs_diff"] < 1e-5
    assert {r["latency_ms"] for r in rows} == {4.0, 2.0}  # the mini 32- and paper 16-sample bases
