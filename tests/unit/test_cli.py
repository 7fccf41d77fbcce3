"""Recipes and the CLI: every recipe resolves and instantiates; bad names are explained."""

import subprocess
import sys

import pytest

from zoo.backbones import ConvTasNet, SpectrogramUNet
from zoo.cli import RecipeError, ZooCLI, available_recipes, load_recipe, main, recipe_args
from zoo.losses import MixITLoss, PITLoss, SemiSupervisedLoss

EXPECTED = {
    "libri2mix_unet": (PITLoss, 2),
    "libri2mix_pit": (PITLoss, 2),
    "libri2mix_mixit": (MixITLoss, 4),
    "libri2mix_semisup_mixit": (SemiSupervisedLoss, 4),
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
    assert isinstance(cli.model.backbone, (ConvTasNet, SpectrogramUNet))
    loss_cls, n_out = EXPECTED.get(name, (object, None))
    assert isinstance(cli.model.loss, loss_cls)
    if n_out:
        assert cli.model.backbone.n_src == n_out
    n_params = sum(p.numel() for p in cli.model.backbone.parameters())
    if mini:
        assert cli.trainer.max_epochs < 200 and n_params < 1_000_000  # short budget, small net
        assert cli.datamodule.train_subset == "train-100"
    else:
        assert cli.trainer.max_epochs == 200 and n_params > 4_000_000
        assert cli.datamodule.train_subset == "train-360"


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
