"""One evaluation path: ``zoo evaluate`` / ``zoo oracle`` run a recipe's own test stage.

The numbers must equal the recipe's own test of the same model on the same data, for a
Libri2Mix root and a MUSDB18-HQ root that this project did not make (copies of the tiny mini
sets without their marker file, so they are not labelled mini), and the split and item limit
given to ``zoo evaluate`` must be the ones scored (checked by the item IDs).
"""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import FIXTURES, SMOKE, TINY_SPEC
from zoo.cli import main
from zoo.data.mini import MARKER
from zoo.run.evaluate import evaluate, run_oracles
from zoo.run.train import run_recipe

ONE_STEP = [*SMOKE, "--trainer.limit_train_batches=1", "--data.init_args.num_workers=0"]


def _foreign(root, tmp_path):
    """A copy of a mini set that does not say it is one (as a real dataset would not)."""
    copy = tmp_path / root.name
    shutil.copytree(root, copy)
    (copy / MARKER).unlink()
    return copy


def _rows(out):
    return list(csv.DictReader(open(out / "test_items.csv")))


def _counting(monkeypatch, module, name):
    """Count the calls of ``module.name`` (still calling it)."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(torch.empty(()).device.type)  # "meta": the loader's shape check
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_evaluate_equals_the_recipe_test_on_libri2mix(trained_pit, tmp_path, monkeypatch):
    own, data = trained_pit.metrics, trained_pit.data  # a root the project did not label mini
    assert own["mini"] is False and own["n_items"] == TINY_SPEC["n_test"]
    model = trained_pit.out / "model"
    out = tmp_path / "eval"
    import zoo.run.build
    from zoo.backbones import ConvTasNet

    resolved = _counting(monkeypatch, zoo.run.build, "load_recipe")
    built = _counting(monkeypatch, ConvTasNet, "__init__")
    assert main(["evaluate", str(model), "--data", str(data), "-o", str(out)]) == 0  # recipe
    # the recipe resolved once, the network built once (by zoo.load), the recipe's trainer on
    # one device with nothing saved but the results (and the resolved config as a record)
    assert len(resolved) == 1 and built.count("cpu") == 1
    assert sorted(p.name for p in out.iterdir()) == [".zoo-results.json", "config.yaml",
                                                     "metrics.json", "test_items.csv"]  # fmt: skip
    monkeypatch.undo()
    got = json.loads((out / "metrics.json").read_text())  # read from the model's provenance
    assert got["si_sdr"] == pytest.approx(own["si_sdr"], abs=1e-5)
    assert got["si_sdri"] == pytest.approx(own["si_sdri"], abs=1e-5)
    assert got["n_items"] == own["n_items"] and got["recipe"] == "libri2mix_pit"
    assert [r["id"] for r in _rows(out)] == [r["id"] for r in _rows(model.parent)]
    # --split dev --limit 3 scores exactly the first three dev mixtures, and says so
    part = evaluate(str(model), data=str(data), split="dev", limit=3, out=str(tmp_path / "dev"))
    dev_csv = data / "wav8k/min/metadata/mixture_dev_mix_clean.csv"
    want = sorted(r["mixture_ID"] for r in list(csv.DictReader(open(dev_csv)))[:3])
    assert part["split"] == "dev" and part["n_items"] == 3
    assert [r["id"] for r in _rows(tmp_path / "dev")] == want


def test_evaluate_equals_the_recipe_test_on_musdb18(tiny_musdb, tmp_path):
    data = _foreign(tiny_musdb, tmp_path)
    own = run_recipe(
        "musdb18_umx",
        data=str(data),
        results=tmp_path / "results",
        overrides=[
            *ONE_STEP,
            "--data.init_args.setup_file=mini_setup.yaml",
            "--data.init_args.segment=0.5",
            "--data.init_args.batch_size=2",
            "--data.init_args.samples_per_track=1",
            "--data.init_args.val_seconds=1.0",
            "--model.input_stats_batches=1",
            "--model.backbone.init_args.hidden_size=32",
            "--model.backbone.init_args.nb_layers=1",
        ],
    )
    assert own["mini"] is False and set(own["targets"]) == {"vocals", "drums", "bass", "other"}
    model = tmp_path / "results" / "musdb18_umx" / "model"
    got = evaluate(str(model), "musdb18_umx", str(data), out=str(tmp_path / "eval"))
    for target, scores in own["targets"].items():
        assert got["targets"][target]["sdr"] == pytest.approx(scores["sdr"], abs=1e-4)
    assert got["sdr"] == pytest.approx(own["sdr"], abs=1e-4)


def test_a_converted_peer_model_names_its_recipe(tiny_musdb, tmp_path):
    # The Open-Unmix folder made by the real package (16 kHz, vocals + accompaniment): the
    # recipe's data follow its rate and targets, scored with the museval-equivalent metrics.
    peer = str(FIXTURES / "openunmix_tiny")
    args = ["evaluate", peer, "--data", str(tiny_musdb), "-o", str(tmp_path / "e"), "--limit", "1"]
    assert main(args) == 2  # no recipe in a converted model's provenance: say which one
    assert main([*args, "--recipe", "musdb18_umx"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["dataset"] == "MUSDB18-HQ" and metrics["sample_rate"] == 16000
    assert set(metrics["targets"]) == {"accompaniment", "vocals"} and metrics["n_items"] == 1
    assert metrics["mini"] is True and metrics["macs_per_second"] > 0
    assert all(np.isfinite(metrics["targets"][t]["sdr"]) for t in metrics["targets"])
    # anonymous outputs (s1, s2) cannot be scored against the four named MUSDB18 targets
    bad = ["evaluate", "convtasnet-tiny-random", "--recipe", "musdb18_umx", "--download"]
    assert main([*bad, "--data", str(tiny_musdb), "-o", str(tmp_path / "bad")]) == 2


def test_oracles_run_the_recipe_test(tiny_libri2mix, tmp_path, monkeypatch):
    import zoo.run.build

    resolved = _counting(monkeypatch, zoo.run.build, "load_recipe")
    rows = run_oracles("libri2mix_pit", str(tiny_libri2mix), ["irm", "mixture"], results=tmp_path)
    assert len(resolved) == 1  # once for every oracle
    irm, mixture = rows
    assert irm["oracle"] and irm["mini"] and irm["model"] == "oracle-irm"
    assert irm["si_sdri"] > 5 > abs(mixture["si_sdri"])  # the mixture's SI-SDRi is 0 by definition
    assert mixture["si_sdri"] == pytest.approx(0.0, abs=1e-4)
    assert irm["n_items"] == TINY_SPEC["n_test"] and "sdri" in irm
    # the masks' STFT is recorded with each number
    assert irm["oracle_settings"] == {"n_fft": 256, "hop": 64, "chunk_seconds": None}
    assert (tmp_path / "libri2mix_pit-oracle-irm" / "metrics.json").is_file()


def test_chunked_oracle_runs_the_same_clips_through_the_recipe_test(tiny_libri2mix, tmp_path):
    (oracle,) = run_oracles(
        "libri2mix_pit", str(tiny_libri2mix), ["wiener"], 256, 64, str(tmp_path), limit=2,
        chunk_seconds=0.5,
    )  # fmt: skip
    assert oracle["protocol"] == "oracle" and oracle["test_protocol"] == {"chunk_seconds": 0.5}
    assert oracle["architecture"] == "oracle WIENER, 0.5 s clips" and oracle["si_sdri"] > 5
    assert oracle["n_items"] == 2
