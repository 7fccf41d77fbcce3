"""SeparationSystem: the data/backbone agreement checked at setup, test rows returned (not
kept), matching chosen by the backbone contract."""

import csv

import pytest
import torch

from tests.conftest import TINY_CONVTASNET
from zoo.backbones import Backbone, ContractError, ConvTasNet
from zoo.data.libri2mix import Libri2MixDataModule
from zoo.losses import PITLoss
from zoo.system import IncompatibleDataError, SeparationSystem


def _fit(system, dm, make_trainer):
    make_trainer(max_steps=1, limit_val_batches=0).fit(system, datamodule=dm)


def test_a_rate_mismatch_fails_before_training_naming_both(tiny_libri2mix, quiet_trainer):
    system = SeparationSystem(ConvTasNet(n_src=2, sample_rate=8000, **TINY_CONVTASNET), PITLoss())
    dm = Libri2MixDataModule(str(tiny_libri2mix), sample_rate=16000, train_subset="train-100")
    before = {k: v.clone() for k, v in system.state_dict().items()}
    with pytest.raises(IncompatibleDataError) as err:
        _fit(system, dm, quiet_trainer)
    msg = str(err.value)
    assert "16000 Hz (data.init_args.sample_rate)" in msg and "8000 Hz" in msg
    assert "model.backbone.init_args" in msg
    assert all(torch.equal(v, system.state_dict()[k]) for k, v in before.items())  # no step


def test_too_few_outputs_and_named_targets_are_refused(tiny_libri2mix, quiet_trainer):
    dm = Libri2MixDataModule(str(tiny_libri2mix), train_subset="train-100")
    one = SeparationSystem(ConvTasNet(n_src=1, **TINY_CONVTASNET), PITLoss())
    with pytest.raises(IncompatibleDataError, match="1 outputs .* for 2 sources"):
        _fit(one, dm, quiet_trainer)
    named = ConvTasNet(n_src=2, sources=["vocals", "bass"], **TINY_CONVTASNET)
    with pytest.raises(IncompatibleDataError, match=r"named targets \['vocals', 'bass'\]"):
        _fit(SeparationSystem(named, PITLoss()), dm, quiet_trainer)


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


class _Guarded(dict):
    """A batch whose references must not be read."""

    def __getitem__(self, key):
        assert key not in ("sources", "ref"), f"the blind protocol read batch[{key!r}]"
        return super().__getitem__(key)


def test_blind_protocol_never_reads_references_and_oracle_stitch_is_labelled():
    from zoo.backbones import AudioSlots

    torch.manual_seed(0)
    backbone = AudioSlots(
        n_slots=3, sample_rate=8000, n_fft=128, hop=32, chunk_seconds=0.25, channels=(8, 16),
        dim=16, heads=2, n_layers=1, decoder_hidden=16, carry=True,
    )  # fmt: skip
    system = SeparationSystem(backbone, PITLoss()).eval()
    sources = torch.randn(2, 2, 1, 5000)
    batch = {"mix": sources.sum(1), "sources": sources, "id": ["a", "b"]}
    with torch.no_grad():
        blind = system.separate(_Guarded(batch))  # the headline estimates: the mixture alone
        out = system.test_step(batch, 0)
        noise = system.test_step({**batch, "sources": torch.randn_like(sources)}, 0)
    torch.testing.assert_close(blind, backbone(batch["mix"]))
    row = out["rows"][0]
    assert {"oracle_stitch_si_sdr", "oracle_stitch_si_sdri"} <= set(row)
    assert row["oracle_stitch_si_sdr"] != row["si_sdr"]  # scored apart from the headline
    # other references change the scores, not the blind estimates' order (est_for_*)
    assert row["si_sdr"] != noise["rows"][0]["si_sdr"]


def test_results_record_the_protocol(tiny_libri2mix, tmp_path, quiet_trainer):
    from zoo.backbones import AudioSlots
    from zoo.run.results import ResultsWriter, read_results

    backbone = AudioSlots(
        n_slots=2, sample_rate=8000, n_fft=128, hop=32, chunk_seconds=0.25, channels=(8, 16),
        dim=16, heads=2, n_layers=1, decoder_hidden=16, mask="ibm",
    )  # fmt: skip
    system = SeparationSystem(backbone, PITLoss())
    trainer = quiet_trainer(callbacks=[ResultsWriter(str(tmp_path))], limit_test_batches=2)
    trainer.test(system, datamodule=Libri2MixDataModule(str(tiny_libri2mix)), verbose=False)
    result = read_results(tmp_path)
    assert result["protocol"] == "blind" and result["test_protocol"]["mask"] == "ibm"
    assert result["test_protocol"]["chunk_seconds"] == 0.25
    rows = list(csv.DictReader(open(tmp_path / "test_items.csv")))
    assert result["oracle_stitch_si_sdri"] == pytest.approx(
        sum(float(r["oracle_stitch_si_sdri"]) for r in rows) / len(rows)
    )


def test_mono_training_items_are_refused_for_a_stereo_only_backbone(tiny_musdb, quiet_trainer):
    from zoo.backbones import OpenUnmix
    from zoo.data.musdb18 import MUSDB18DataModule
    from zoo.losses import FixedOrderLoss

    dm = MUSDB18DataModule(str(tiny_musdb), setup_file="mini_setup.yaml", random_channel=True)
    umx = OpenUnmix(n_fft=256, hop=64, hidden_size=8, bandwidth=None)
    system = SeparationSystem(umx, FixedOrderLoss())
    with pytest.raises(IncompatibleDataError, match=r"1-channel items .*random_channel: false"):
        _fit(system, dm, quiet_trainer)
