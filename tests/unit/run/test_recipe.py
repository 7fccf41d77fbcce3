"""Recipes and the CLI: every recipe resolves and instantiates; bad names are explained."""

import subprocess
import sys

import pytest

from zoo.backbones import (
    AudioSlots,
    AudioSlotsAutoencoder,
    ConvTasNet,
    HTDemucs,
    MetaTasNet,
    OpenUnmix,
    RoFormer,
    SpectrogramUNet,
)
from zoo.cli import main
from zoo.data.musdb18 import MUSDB18DataModule
from zoo.losses import FixedOrderLoss, HungarianLoss, MixITLoss, PITLoss, SemiSupervisedLoss
from zoo.run.build import build, resolve
from zoo.run.recipe import RecipeError, available_recipes, load_recipe

# recipe -> (backbone class, loss class, outputs, paper-scale parameter count lower bound)
EXPECTED = {
    "libri2mix_unet": (SpectrogramUNet, PITLoss, 2, 4_000_000),
    "libri2mix_pit": (ConvTasNet, PITLoss, 2, 4_984_881),
    "libri2mix_pit_causal": (ConvTasNet, PITLoss, 2, 4_984_881),  # same layout, causal convs
    "libri2mix_mixit": (ConvTasNet, MixITLoss, 4, 4_000_000),
    "libri2mix_semisup_mixit": (ConvTasNet, SemiSupervisedLoss, 4, 4_000_000),
    "libri2mix_audioslots": (AudioSlots, HungarianLoss, 2, 5_000_000),  # n = 2 sources
    "libri2mix_audioslots_carry": (AudioSlots, HungarianLoss, 2, 5_000_000),
    "libri2mix_audioslots_autoencoder": (AudioSlotsAutoencoder, HungarianLoss, 2, 5_000_000),
    "musdb18_umx": (OpenUnmix, FixedOrderLoss, 4, 4 * 8_893_348),
    "musdb18_unet": (SpectrogramUNet, FixedOrderLoss, 4, 9_000_000),
    "musdb18_convtasnet": (ConvTasNet, FixedOrderLoss, 4, 4_900_000),
    "musdb18_metatasnet": (MetaTasNet, FixedOrderLoss, 4, 45_070_325),
    "musdb18_bsroformer": (RoFormer, FixedOrderLoss, 4, 222_335_748),
    "musdb18_htdemucs": (HTDemucs, FixedOrderLoss, 4, 26_899_536),
}


def test_core_recipes_exist():
    assert set(EXPECTED) <= set(available_recipes())


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(RecipeError) as err:
        load_recipe("libri2mix_nope")
    assert "libri2mix_nope" in str(err.value)
    for name in available_recipes():
        assert name in str(err.value)


def test_unknown_recipe_from_the_command_line(capsys):
    assert main(["recipe", "no_such_recipe"]) == 2
    assert "available recipes: " in capsys.readouterr().err


@pytest.mark.parametrize("name", available_recipes())
@pytest.mark.parametrize("mini", [True, False])
def test_every_recipe_instantiates(name, mini, tmp_path):
    run = resolve(
        name,
        data=None if mini else str(tmp_path / "Libri2Mix"),
        results=tmp_path,
        mini_root_dir=tmp_path / "mini",
        prepare_data=False,
    )
    cli = build(run)
    backbone_cls, loss_cls, n_out, paper_params = EXPECTED[name]
    assert isinstance(cli.model.backbone, backbone_cls)
    assert isinstance(cli.model.loss, loss_cls)
    assert cli.model.backbone.n_src == n_out
    n_params = sum(p.numel() for p in cli.model.backbone.parameters())
    music = isinstance(cli.datamodule, MUSDB18DataModule)
    if music:  # named targets in the datamodule's order, scored as museval does
        assert cli.model.backbone.ordered and cli.model.bss_eval
        assert list(cli.model.backbone.sources) == list(cli.datamodule.source_names)
    # the data are read at the backbone's rate (stated once, in the backbone)
    assert cli.datamodule.sample_rate == cli.model.backbone.sample_rate
    budget = (cli.trainer.max_epochs, cli.trainer.max_steps)  # epochs, or a step budget
    if mini:
        assert n_params < 2_000_000  # small net, short budget
        assert budget[0] < 200 if budget[0] > 0 else 0 < budget[1] <= 20_000
        assert music or cli.datamodule.train_subset == "train-100"
        assert not music or cli.datamodule.setup_file == "mini_setup.yaml"
    else:
        assert n_params >= paper_params
        assert budget[0] >= 200 if budget[0] > 0 else budget[1] >= 300_000  # the paper's
        assert music or cli.datamodule.train_subset == "train-360"
        assert not music or cli.datamodule.setup_file is None  # musdb's official split


def test_recipe_overrides_apply_last(tmp_path):
    run = resolve(
        "libri2mix_pit",
        results=tmp_path,
        mini_root_dir=tmp_path / "m",
        prepare_data=False,
        overrides=["--trainer.max_epochs=2"],
    )
    assert build(run).trainer.max_epochs == 2


def test_zoo_console_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    # the command table, each line from its function's docstring
    for cmd in ("recipe", "recipes", "prepare", "export", "list", "download", "separate"):
        assert f"  {cmd} " in out
    assert "evaluate" in out and "oracle" in out and "leaderboard" in out


def test_a_recipe_stating_another_data_rate_fails_before_training(tmp_path):
    from zoo.system import IncompatibleDataError

    recipe = tmp_path / "recipes" / "libri2mix_pit16k.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        "compose: [conf/trainer/default.yaml, conf/data/libri2mix.yaml,"
        " conf/backbone/convtasnet.yaml, conf/loss/pit.yaml]\n"
        "data:\n  init_args:\n    sample_rate: 16000\n"
    )
    run = resolve(str(recipe), data=str(tmp_path / "Libri2Mix"), results=tmp_path,
                  prepare_data=False)  # fmt: skip
    with pytest.raises(IncompatibleDataError) as err:
        build(run)
    msg = str(err.value)
    assert "16000 Hz" in msg and "8000 Hz" in msg and "libri2mix_pit16k.yaml" in msg
    # the same rate stated on the command line
    override = ["--data.init_args.sample_rate=16000"]
    cli_run = resolve("libri2mix_pit", results=tmp_path, mini_root_dir=tmp_path / "m",
                      prepare_data=False, overrides=override)  # fmt: skip
    with pytest.raises(IncompatibleDataError, match="command line"):
        build(cli_run)


def test_malformed_recipes_name_the_file_and_key(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("compose: [conf/nope.yaml]\n")
    with pytest.raises(RecipeError, match=r"x\.yaml: composed fragment conf/nope.yaml"):
        load_recipe(str(bad))
    bad.write_text("trainers: {}\n")
    with pytest.raises(RecipeError, match=r"x\.yaml: unknown keys \['trainers'\]"):
        load_recipe(str(bad))
    bad.write_text("recipe: {mini_dataset: nope}\n")
    with pytest.raises(RecipeError, match="mini_dataset 'nope'"):
        load_recipe(str(bad))


def test_the_cli_takes_only_zoo_backbones_at_parse_time(capsys):
    from zoo.run.build import ZooCLI
    from zoo.run.paths import ASSETS

    args = ["--config", str(ASSETS / "conf/data/libri2mix.yaml"), "--config",
            str(ASSETS / "conf/loss/pit.yaml"), "--model.backbone=torch.nn.Linear"]  # fmt: skip
    with pytest.raises(SystemExit):
        ZooCLI(args=args, run=False)
    assert "does not correspond to a subclass of Backbone" in capsys.readouterr().err


def test_an_evaluation_uses_the_recipes_trainer_on_one_device_saving_nothing(tmp_path):
    run = resolve("libri2mix_pit", data=str(tmp_path / "Libri2Mix"), results=tmp_path,
                  prepare_data=False, evaluate=True)  # fmt: skip
    trainer = build(run).trainer
    assert trainer.num_devices == 1 and trainer.checkpoint_callback is None
    assert trainer.logger is None and not trainer.early_stopping_callback
    # the recipe's own settings otherwise (its precision, gradient clipping)
    assert trainer.gradient_clip_val == 5.0
