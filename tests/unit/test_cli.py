"""Recipes and the CLI: every recipe resolves and instantiates; bad names are explained."""

import subprocess
import sys

import pytest

from zoo.backbones import AudioSlots, ConvTasNet, MetaTasNet, OpenUnmix, SpectrogramUNet
from zoo.cli import RecipeError, ZooCLI, available_recipes, load_recipe, main, recipe_args
from zoo.data.musdb18 import MUSDB18DataModule
from zoo.losses import FixedOrderLoss, HungarianLoss, MixITLoss, PITLoss, SemiSupervisedLoss

# recipe -> (backbone class, loss class, outputs, paper-scale parameter count lower bound)
EXPECTED = {
    "libri2mix_unet": (SpectrogramUNet, PITLoss, 2, 4_000_000),
    "libri2mix_pit": (ConvTasNet, PITLoss, 2, 4_984_881),
    "libri2mix_mixit": (ConvTasNet, MixITLoss, 4, 4_000_000),
    "libri2mix_semisup_mixit": (ConvTasNet, SemiSupervisedLoss, 4, 4_000_000),
    "libri2mix_audioslots": (AudioSlots, HungarianLoss, 4, 5_000_000),
    "musdb18_umx": (OpenUnmix, FixedOrderLoss, 4, 4 * 8_893_348),
    "musdb18_unet": (SpectrogramUNet, FixedOrderLoss, 4, 9_000_000),
    "musdb18_convtasnet": (ConvTasNet, FixedOrderLoss, 4, 4_900_000),
    "musdb18_metatasnet": (MetaTasNet, FixedOrderLoss, 4, 45_070_325),
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
    r = recipe_args(
        name,
        data=None if mini else str(tmp_path / "Libri2Mix"),
        results=tmp_path,
        mini_root=tmp_path / "mini",
        prepare_data=False,
    )
    cli = ZooCLI(args=r["args"], run=False)
    backbone_cls, loss_cls, n_out, paper_params = EXPECTED[name]
    assert isinstance(cli.model.backbone, backbone_cls)
    assert isinstance(cli.model.loss, loss_cls)
    assert cli.model.backbone.n_src == n_out
    n_params = sum(p.numel() for p in cli.model.backbone.parameters())
    music = isinstance(cli.datamodule, MUSDB18DataModule)
    if music:  # named targets in the datamodule's order, scored as museval does
        assert cli.model.match == "fixed" and cli.model.bss_eval
        assert list(cli.model.backbone.sources) == list(cli.datamodule.targets)
    if mini:
        assert cli.trainer.max_epochs < 200 and n_params < 2_000_000  # short budget, small net
        assert music or cli.datamodule.train_subset == "train-100"
        assert not music or cli.datamodule.setup_file == "mini_setup.yaml"
    else:
        assert cli.trainer.max_epochs >= 200 and n_params >= paper_params
        assert music or cli.datamodule.train_subset == "train-360"
        assert not music or cli.datamodule.setup_file is None  # musdb's official split


def test_recipe_overrides_apply_last(tmp_path):
    r = recipe_args(
        "libri2mix_pit",
        results=tmp_path,
        mini_root=tmp_path / "m",
        prepare_data=False,
        overrides=["--trainer.max_epochs=2"],
    )
    assert ZooCLI(args=r["args"], run=False).trainer.max_epochs == 2


def test_zoo_console_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "recipe NAME" in out and "prepare libri2mix-mini" in out
