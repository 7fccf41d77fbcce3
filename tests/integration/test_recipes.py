"""Recipes end to end on a tiny mini set, and DDP test metrics equal to one process.

The default tier runs one recipe per datamodule end to end; the system tier (``make
test-slow``) runs every recipe, the two-process runs and the paper-scale configuration."""

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch

from tests.conftest import SMOKE, TINY_CONVTASNET, TINY_SPEC, copy_run
from zoo.backbones import ConvTasNet, OpenUnmix
from zoo.data.libri2mix import Libri2MixDataModule
from zoo.data.mini import MARKER
from zoo.losses import FixedOrderLoss, PITLoss
from zoo.run.recipe import available_recipes, load_recipe
from zoo.run.results import ResultsWriter
from zoo.run.train import run_recipe
from zoo.system import SeparationSystem

# in bf16 mixed precision, so that every recipe is known to train, validate, test and export
# with it; the DDP test runs every recipe end to end in float32
BF16 = [*SMOKE, "--trainer.precision=bf16-mixed"]
# the default tier: one recipe per datamodule (the system tier runs them all)
DEFAULT_SMOKE = {"libri2mix_pit", "musdb18_unet"}
SMOKE_CASES = [
    name if name in DEFAULT_SMOKE else pytest.param(name, marks=pytest.mark.system)
    for name in available_recipes()
]
REQUIRED = {
    "recipe",
    "dataset",
    "mini",
    "split",
    "n_items",
    "si_sdr",
    "si_sdri",
    "params",
    "git_sha",
    "wall_time_s",
}


def test_the_default_smoke_runs_cover_every_datamodule():
    from zoo.data import DATAMODULES

    data = {load_recipe(n).merged(False)["data"]["class_path"] for n in DEFAULT_SMOKE}
    assert data == {f"{dm.__module__}.{dm.__name__}" for dm in DATAMODULES}


@pytest.mark.parametrize("name", SMOKE_CASES)
def test_recipe_smoke_run_writes_results(name, tiny_libri2mix, tiny_musdb, tmp_path):
    mini = load_recipe(name).mini_dataset
    root = {"libri2mix-mini": tiny_libri2mix, "musdb18-mini": tiny_musdb}[mini]
    result = run_recipe(name, overrides=BF16, results=tmp_path, mini_root_dir=root)
    out = tmp_path / name
    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED <= set(metrics)
    assert metrics["mini"] is True and metrics["recipe"] == name
    if mini == "musdb18-mini":  # the synthetic test tracks, and stempeg's excerpt if decoded
        info = json.loads((root / MARKER).read_text())
        expected = len(info["tracks"]["test"]) + bool(info["stempeg_example"])
    else:
        expected = TINY_SPEC["n_test"]
    assert metrics["n_items"] == expected and metrics["split"] == "test"
    assert metrics["si_sdr"] == pytest.approx(result["si_sdr"])
    rows = list(csv.DictReader(open(out / "test_items.csv")))
    assert len(rows) == expected
    mean = sum(float(r["si_sdri"]) for r in rows) / len(rows)
    assert mean == pytest.approx(metrics["si_sdri"], abs=1e-4)
    if mini == "musdb18-mini":  # museval-style scores per target, median over tracks
        assert set(metrics["targets"]) == {"vocals", "drums", "bass", "other"}
        sdrs = [float(r["sdr_vocals"]) for r in rows]
        assert metrics["targets"]["vocals"]["sdr"] == pytest.approx(
            float(np.median(sdrs)), abs=1e-3
        )
        assert metrics["sdr"] == pytest.approx(
            np.mean([t["sdr"] for t in metrics["targets"].values()]), abs=1e-3
        )
        # the full-track SDR beside it: mean over tracks, each key named by its definition
        usdr = [float(r["usdr_vocals"]) for r in rows]
        assert metrics["targets"]["vocals"]["usdr"] == pytest.approx(np.mean(usdr), abs=1e-3)
        assert "median over 1 s frames" in metrics["metric_definitions"]["sdr"]
        assert "whole track" in metrics["metric_definitions"]["usdr"]
    # every row says how its estimates were ordered: blind, or oracle for reference rows
    assert metrics["protocol"] == ("oracle" if name.endswith("_autoencoder") else "blind")
    if name.startswith("libri2mix_audioslots") and metrics["protocol"] == "blind":
        assert metrics["test_protocol"]["mask"] == "wiener"  # and the paper's protocol beside
        assert np.isfinite(metrics["oracle_stitch_si_sdri"])
        mean = sum(float(r["oracle_stitch_si_sdri"]) for r in rows) / len(rows)
        assert metrics["oracle_stitch_si_sdri"] == pytest.approx(mean, abs=1e-4)
    if name == "libri2mix_audioslots_carry":  # the mask changed for a test (zoo evaluate --set)
        from zoo.run.evaluate import evaluate

        ibm = evaluate(str(out / "model"), data=str(root), set=["mask=ibm"], results=tmp_path)
        assert ibm["test_protocol"]["mask"] == "ibm" and ibm["backbone_changes"] == {"mask": "ibm"}
        assert ibm["n_items"] == expected and ibm["si_sdri"] != metrics["si_sdri"]
        assert (tmp_path / f"eval-{ibm['model']}-{name}-mask=ibm" / "metrics.json").is_file()
        with pytest.raises(ValueError, match="NAME one of AudioSlots's arguments"):
            evaluate(str(out / "model"), data=str(root), set=["maks=ibm"], results=tmp_path)


def test_rerun_keeps_the_previous_results(trained_pit, tmp_path):
    first = (copy_run(trained_pit, tmp_path) / "metrics.json").read_text()
    run_recipe("libri2mix_pit", overrides=SMOKE, results=tmp_path, mini_root_dir=trained_pit.data)
    archived = list((tmp_path / ".archive").glob("libri2mix_pit-*/metrics.json"))
    assert len(archived) == 1 and archived[0].read_text() == first


def _test_run(make_trainer, model, dm, out, **trainer_kw):
    trainer = make_trainer(callbacks=[ResultsWriter(str(out))], **trainer_kw)
    trainer.test(model, datamodule=dm)
    return json.loads((out / "metrics.json").read_text()), list(
        csv.DictReader(open(out / "test_items.csv"))
    )


@pytest.mark.system
def test_ddp_two_processes_equal_one_process(tiny_libri2mix, tmp_path, quiet_trainer):
    L.seed_everything(0)
    backbone = ConvTasNet(n_src=2, **TINY_CONVTASNET)
    model = SeparationSystem(backbone, PITLoss())
    dm = Libri2MixDataModule(str(tiny_libri2mix), train_subset="train-100")
    one, rows_one = _test_run(quiet_trainer, model, dm, tmp_path / "one", devices=1)
    two, rows_two = _test_run(
        quiet_trainer, model, dm, tmp_path / "two", devices=2, strategy="ddp_spawn"
    )
    assert two["world_size"] == 2 and one["world_size"] == 1
    # 5 test items over 2 ranks: 3 + 2, each scored exactly once (no padding duplicates).
    assert one["n_items"] == two["n_items"] == TINY_SPEC["n_test"]
    assert two["si_sdr"] == pytest.approx(one["si_sdr"], abs=1e-5)
    assert two["si_sdri"] == pytest.approx(one["si_sdri"], abs=1e-5)
    assert [r["id"] for r in rows_one] == [r["id"] for r in rows_two]
    for a, b in zip(rows_one, rows_two, strict=True):
        assert float(a["si_sdr"]) == pytest.approx(float(b["si_sdr"]), abs=1e-5)


def test_recipe_export_loads_with_identical_outputs_and_evaluates(trained_pit, tmp_path):
    import torch

    import zoo
    from zoo.run.evaluate import evaluate
    from zoo.run.export import export_checkpoint

    out, data = trained_pit.out, trained_pit.data
    sep = zoo.load(out / "model")
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["provenance"]["recipe"] == "libri2mix_pit"
    assert cfg["provenance"]["metrics"]["si_sdri"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["si_sdri"]
    )
    # the exported weights are the tested best checkpoint's: re-export it and compare outputs
    ckpt = next(out.glob("lightning_logs/version_0/checkpoints/best-*.ckpt"))
    again = zoo.load(export_checkpoint(ckpt, tmp_path / "again"))
    x = torch.randn(1, 1, 4000)
    with torch.no_grad():
        assert torch.equal(sep(x), again(x))
    # zoo evaluate scores the exported model with the recipe's metrics
    r = evaluate(str(out / "model"), data=str(data), out=str(tmp_path / "eval"))
    assert r["si_sdri"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["si_sdri"], abs=1e-4
    )
    assert r["mini"] is False and r["macs_per_second"] > 0 and r["rtf"] > 0
    assert "sdri" in r and r["n_items"] == TINY_SPEC["n_test"]
    # the recipe's trained model exports: onnxruntime gives PyTorch's outputs
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from zoo.run.onnx import export_onnx

    record = export_onnx(str(out / "model"), tmp_path / "model.onnx")
    assert record["max_abs_error"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 1, 9001)
    with torch.no_grad():
        want = sep(x)
    got = torch.from_numpy(session.run(["sources"], {"mixture": x.numpy()})[0])
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-4


@pytest.mark.system
def test_paper_scale_config_runs_with_data(tiny_libri2mix, tmp_path):
    # DATA= given: the recipe's paper-scale configuration (4.98 M-parameter Conv-TasNet, 3 s
    # segments, batch 6) is what runs; here one training step on CPU on the tiny set (laid out
    # as a real Libri2Mix whose only training subset is train-100).
    result = run_recipe(
        "libri2mix_pit",
        data=str(tiny_libri2mix),
        results=tmp_path,
        overrides=[
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            "--data.init_args.train_subset=train-100",
            "--data.init_args.segment=1.5",
            "--data.init_args.val_segment=null",
            "--data.init_args.num_workers=0",
        ],
    )
    assert result["params"] == 4_984_881
    assert result["mini"] is True  # DATA= points at the built-in set: still labelled mini
    assert "built-in mini dataset" in result["data_source"]


class _RankDependentStats(OpenUnmix):
    """Each DDP rank computes different input statistics (its mixtures scaled by rank + 1)."""

    def fit_input_stats(self, mixtures):
        import torch.distributed as dist

        scale = dist.get_rank() + 1 if dist.is_initialized() else 1
        return super().fit_input_stats(m * scale for m in mixtures)


class _SameStatsOnEveryRank(L.Callback):
    def on_train_start(self, trainer, pl_module):
        mean = pl_module.backbone.target_models["vocals"].input_mean.detach()
        gathered = trainer.strategy.all_gather(mean)  # (world, bins)
        assert torch.equal(gathered[0], gathered[1]), "ranks disagree on input statistics"
        assert trainer.world_size == 2


class _RandomBatches(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        ref = torch.randn(8, 2, 2, 2000, generator=g)
        return torch.utils.data.DataLoader([{"mix": r.sum(0), "ref": r} for r in ref], 2)


@pytest.mark.system
def test_ddp_ranks_start_from_rank_zero_input_statistics(quiet_trainer):
    backbone = _RankDependentStats(["vocals", "drums"], 16000, 256, 64, 2, 16, 1)
    model = SeparationSystem(backbone, FixedOrderLoss(), input_stats_batches=2)
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp_spawn",
        max_steps=1,
        limit_val_batches=0,
        callbacks=[_SameStatsOnEveryRank()],
    )
    trainer.fit(model, datamodule=_RandomBatches())


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_recipe_trains_on_libri2mix_built_from_librispeech(dynamic, tmp_path):
    """DATA= LibriSpeech and LibriMix's metadata: the recipe trains, validates and tests on
    items built on the fly (or, with dynamic mixing, trains on new mixtures), writing nothing
    under LibriSpeech."""
    from zoo.data.librimix_mini import write_librimix_tree
    from zoo.run.paths import ASSETS

    tree = write_librimix_tree(tmp_path / "corpora")
    before = sorted(tree["librispeech"].rglob("*"))
    overrides = [*SMOKE, "--config", str(ASSETS / "conf/backbone/convtasnet_mini.yaml"),
                 f"--data.init_args.metadata={tree['metadata']}",
                 "--data.init_args.train_subset=train-100", "--data.init_args.segment=0.5",
                 "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
                 f"--data.init_args.dynamic_mixing={str(dynamic).lower()}"]  # fmt: skip
    m = run_recipe("libri2mix_pit", data=str(tree["librispeech"]), overrides=overrides,
                   results=tmp_path / "results")  # fmt: skip
    rows = list(csv.DictReader(open(tmp_path / "results/libri2mix_pit/test_items.csv")))
    published = [r["mixture_ID"] for r in csv.DictReader(
        open(tree["metadata"] / "libri2mix_test-clean.csv"))]  # fmt: skip
    assert sorted(r["id"] for r in rows) == sorted(published)  # the metadata's test mixtures
    assert m["train_steps"] == 2 and m["source"] == "built from LibriSpeech on the fly"
    assert m.get("dynamic_mixing", False) is dynamic and m["mini"] is False
    assert sorted(tree["librispeech"].rglob("*")) == before
