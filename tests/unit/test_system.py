"""SeparationSystem: the data/backbone agreement checked at setup, test rows returned (not
kept), matching chosen by the backbone contract."""

import lightning as L
import pytest
import torch

from tests.conftest import TINY_CONVTASNET
from zoo.backbones import Backbone, ContractError, ConvTasNet
from zoo.data.libri2mix import Libri2MixDataModule
from zoo.losses import PITLoss
from zoo.system import IncompatibleDataError, SeparationSystem


def _fit(system, dm, tmp_path):
    L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    ).fit(system, datamodule=dm)


def test_a_rate_mismatch_fails_before_training_naming_both(tiny_libri2mix, tmp_path):
    system = SeparationSystem(ConvTasNet(n_src=2, sample_rate=8000, **TINY_CONVTASNET), PITLoss())
    dm = Libri2MixDataModule(str(tiny_libri2mix), sample_rate=16000, train_subset="train-100")
    before = {k: v.clone() for k, v in system.state_dict().items()}
    with pytest.raises(IncompatibleDataError) as err:
        _fit(system, dm, tmp_path)
    msg = str(err.value)
    assert "16000 Hz (data.init_args.sample_rate)" in msg and "8000 Hz" in msg
    assert "model.backbone.init_args" in msg
    assert all(torch.equal(v, system.state_dict()[k]) for k, v in before.items())  # no step


def test_too_few_outputs_and_named_targets_are_refused(tiny_libri2mix, tmp_path):
    dm = Libri2MixDataModule(str(tiny_libri2mix), train_subset="train-100")
    one = SeparationSystem(ConvTasNet(n_src=1, **TINY_CONVTASNET), PITLoss())
    with pytest.raises(IncompatibleDataError, match="1 outputs .* for 2 sources"):
        _fit(one, dm, tmp_path)
    named = ConvTasNet(n_src=2, sources=["vocals", "bass"], **TINY_CONVTASNET)
    with pytest.raises(IncompatibleDataError, match=r"named targets \['vocals', 'bass'\]"):
        _fit(SeparationSystem(named, PITLoss()), dm, tmp_path)


def test_only_contract_backbones_are_accepted():
    with pytest.raises(TypeError, match="backbone contract"):
        SeparationSystem(torch.nn.Conv1d(1, 2, 3), PITLoss())

    class NoRate(Backbone):
        n_src = 2

    with pytest.raises(ContractError, match="sample_rate"):
        SeparationSystem(NoRate(), PITLoss())


def test_test_step_returns_the_rows_and_keeps_nothing(tiny_libri2mix):
    system = SeparationSystem(ConvTasNet(n_src=2, **TINY_CONVTASNET), PITLoss()).eval()
    dm = Libri2MixDataModule(str(tiny_libri2mix))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    state = set(vars(system))
    with torch.no_grad():
        out = system.test_step(batch, 0)
    assert set(vars(system)) == state  # no result state on the module
    (row,) = out["rows"]
    assert row["id"] == batch["id"][0] and {"si_sdr", "si_sdri", "est_for_s1"} <= set(row)
    assert out["audio_seconds"] == pytest.approx(batch["mix"].shape[-1] / 8000)
    assert sorted([row["est_for_s1"], row["est_for_s2"]]) == [0, 1]  # PIT: anonymous outputs
