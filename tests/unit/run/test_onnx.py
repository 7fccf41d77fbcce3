"""``zoo export-onnx``: graphs that onnxruntime runs as PyTorch does, on any batch and length."""

import json
from pathlib import Path

import pytest
import torch

from zoo.backbones import AudioSlots, SpectrogramUNet
from zoo.cli import main
from zoo.hub import registry
from zoo.hub.api import load
from zoo.hub.folder import export_model
from zoo.run.onnx import ExportError, export_onnx, export_torchscript

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _tiny(name: str) -> str:
    """A packaged tiny random model's folder (no download, no cache)."""
    return registry._source_url(f"package:tiny/{name}")[len("file://") :]


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["mixture"]
    assert [o.name for o in session.get_outputs()] == ["sources"]
    return torch.from_numpy(session.run(["sources"], {"mixture": x.numpy()})[0])


def _trained(tmp_path, tiny_convtasnet):
    """A tiny TDCN++ after 20 Adam steps of PIT-free reconstruction on random mixtures (its
    weights are no longer the initial ones), exported in the zoo format."""
    torch.manual_seed(0)
    args = dict(n_src=2, norm="fLN", repeat_skips=True, block_scales=True, mask_act="sigmoid")
    model = tiny_convtasnet(**args, mixture_consistency=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        s = torch.randn(4, 2, 1, 1600)
        loss = (model(s.sum(1)) - s).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    from tests.conftest import TINY_CONVTASNET

    config = {"class_path": "zoo.backbones.ConvTasNet", "init_args": {**TINY_CONVTASNET, **args}}
    config["init_args"]["mixture_consistency"] = True
    return export_model(model, config, tmp_path / "trained")


@pytest.mark.parametrize("which", ["convtasnet-tiny-random", "trained"])
def test_exported_graph_equals_pytorch_on_any_batch_and_length(which, tmp_path, tiny_convtasnet):
    model = str(_trained(tmp_path, tiny_convtasnet)) if which == "trained" else _tiny(which)
    out = tmp_path / "model.onnx"
    record = export_onnx(model, out)
    assert out.is_file() and record["max_abs_error"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["zoo.sample_rate"] == "8000" and meta["zoo.sources"] == "s1,s2"
    backbone = load(model).backbone
    for shape in [(1, 1, 8000), (3, 1, 4321), (2, 1, 12345)]:  # dynamic batch and time axes
        x = torch.randn(*shape)
        got = _run(out, x)
        with torch.no_grad():
            want = backbone(x)
        assert got.shape == want.shape == (shape[0], 2, 1, shape[2])
        assert (got - want).abs().max() <= 1e-4


def test_existing_file_is_never_replaced_and_bad_names_are_refused(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"mine")
    with pytest.raises(ExportError, match="exists: pass --overwrite"):
        export_onnx(_tiny("convtasnet-tiny-random"), out)
    assert out.read_bytes() == b"mine"
    with pytest.raises(ExportError, match=r"must end in \.onnx"):
        export_onnx(_tiny("convtasnet-tiny-random"), tmp_path / "model.bin")
    export_onnx(_tiny("tdcnpp-tiny-random"), out, overwrite=True)
    assert out.read_bytes() != b"mine" and not list(tmp_path.glob(".*.tmp"))


def test_a_backbone_that_does_not_export_yet_says_why_in_one_line(tmp_path, capsys):
    from tests.unit.backbones.test_audioslots import SMALL as SLOTS
    from tests.unit.backbones.test_metatasnet import SMALL
    from zoo.backbones import MetaTasNet

    torch.manual_seed(0)
    config = {"class_path": "zoo.backbones.MetaTasNet", "init_args": dict(SMALL)}
    folder = export_model(MetaTasNet(**SMALL), config, tmp_path / "meta")
    out = tmp_path / "meta.onnx"
    with pytest.raises(ExportError, match="Meta-TasNet does not export yet: torch.export"):
        export_onnx(str(folder), out)
    assert not out.exists()
    assert main(["export-onnx", str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "specialises its length" in err
    # a backbone class without the Exportable capability: refused before any tracing
    from zoo.backbones import OracleMask

    config = {"class_path": "zoo.backbones.OracleMask", "init_args": {}}
    folder = export_model(OracleMask(), config, tmp_path / "oracle")
    with pytest.raises(ExportError, match="reads the true sources"):
        export_onnx(str(folder), tmp_path / "oracle.onnx")
    carry = {**SLOTS, "carry": True}
    config = {"class_path": "zoo.backbones.AudioSlots", "init_args": carry}
    folder = export_model(AudioSlots(**carry), config, tmp_path / "carry")
    with pytest.raises(ExportError, match="carry: true does not export yet: .*second input"):
        export_onnx(str(folder), tmp_path / "carry.onnx")


@pytest.mark.parametrize("mask", ["wiener", "ibm"])
def test_audioslots_exports_one_clip_per_graph(mask, tmp_path):
    from tests.unit.backbones.test_audioslots import SMALL

    torch.manual_seed(0)
    args = {**SMALL, "mask": mask}
    slots = AudioSlots(**args).eval()
    with torch.no_grad():  # distinct slots, as trained ones are: no near-ties for IBM's argmax
        slots.slots.mul_(20)
    clip = slots.export_chunk
    x = torch.randn(2, 1, clip)
    with torch.no_grad():  # the real-valued STFT path equals the complex one
        complex_path = slots(x)
        real_path = slots.use_real_stft()(x)
    assert (real_path - complex_path).abs().max() <= 1e-5
    config = {"class_path": "zoo.backbones.AudioSlots", "init_args": args}
    folder = export_model(slots.use_real_stft(False), config, tmp_path / "slots")
    record = export_onnx(str(folder), tmp_path / "slots.onnx")
    assert record["max_abs_error"] <= 1e-4 and "one clip of 2000 samples" in record["notes"][0]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "slots.onnx")).metadata_props}
    assert meta["zoo.chunk"] == str(clip) == "2000"
    backbone = load(folder).backbone
    for batch in (1, 4):  # a dynamic batch; the clip length is the graph's
        x = torch.randn(batch, 1, clip)
        with torch.no_grad():
            want = backbone(x)
        got = _run(tmp_path / "slots.onnx", x)
        assert got.shape == want.shape == (batch, 3, 1, clip)
        assert (got - want).abs().max() <= 1e-4
    if mask == "wiener":  # the same export form through the TorchScript tracer
        record = export_torchscript(str(folder), tmp_path / "slots.pt")
        assert record["max_abs_error"] <= 1e-4


def test_open_unmix_exports_without_its_wiener_em_and_says_so(tmp_path):
    folder = FIXTURES / "openunmix_tiny"
    sep = load(folder)
    assert sep.backbone.niter > 0  # the published separators run one EM iteration
    record = export_onnx(str(folder), tmp_path / "umx.onnx")
    assert record["exporter"] == "torchscript"  # torch.export cannot trace the LSTM yet
    assert "Wiener EM not in the graph" in record["notes"][0]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "umx.onnx")).metadata_props}
    assert "Wiener EM not in the graph" in meta["zoo.notes"]
    backbone = sep.backbone
    backbone.niter = 0  # what the graph computes: ratio masks with the mixture phase
    x = torch.randn(2, 2, 30000)
    with torch.no_grad():
        want = backbone(x)  # the complex STFT path
    got = _run(tmp_path / "umx.onnx", x)
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-4


def test_cli_writes_the_graph_and_reports_the_check(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", _tiny("convtasnet-tiny-random"), "-o", str(out)]) == 0
    line = capsys.readouterr().out
    assert str(out) in line and "max abs error" in line and "dynamo exporter" in line
    assert out.is_file()


def test_unet_exports_through_the_real_valued_stft(tmp_path):
    torch.manual_seed(0)
    unet = SpectrogramUNet(n_src=2, sample_rate=8192, n_fft=256, hop=64, channels=(4, 8)).eval()
    x = torch.randn(2, 1, 5000)
    with torch.no_grad():
        complex_path = unet(x)
        real_path = unet.use_real_stft()(x)
    assert (real_path - complex_path).abs().max() <= 1e-5  # the two STFT paths agree
    unet.use_real_stft(False)
    config = {
        "class_path": "zoo.backbones.SpectrogramUNet",
        "init_args": dict(n_src=2, sample_rate=8192, n_fft=256, hop=64, channels=[4, 8]),
    }
    folder = export_model(unet, config, tmp_path / "unet")
    record = export_onnx(str(folder), tmp_path / "unet.onnx")
    assert record["max_abs_error"] <= 1e-4
    backbone = load(folder).backbone  # the complex path, as PyTorch runs it
    for shape in [(1, 1, 8192), (3, 1, 3001)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = backbone(x)
        got = _run(tmp_path / "unet.onnx", x)
        assert got.shape == want.shape and (got - want).abs().max() <= 1e-4


def test_torchscript_files_run_alone_and_equal_pytorch(tmp_path, capsys):
    cases = {
        "convtasnet": _tiny("convtasnet-tiny-random"),
        "umx": str(FIXTURES / "openunmix_tiny"),
    }
    for name, model in cases.items():
        out = tmp_path / f"{name}.pt"
        record = export_torchscript(model, out)
        assert record["max_abs_error"] <= 1e-4 and len(record["checked_shapes"]) == 2
        extra = {"zoo.json": ""}
        scripted = torch.jit.load(str(out), _extra_files=extra)  # no zoo code needed
        assert json.loads(extra["zoo.json"])["zoo.sample_rate"] == str(load(model).sample_rate)
        backbone = load(model).backbone
        backbone.niter = 0  # Open-Unmix: the file is the separator without the EM
        x = torch.randn(2, backbone.audio_channels or 1, 12001)
        with torch.no_grad():
            assert (scripted(x) - backbone(x)).abs().max() <= 1e-4
    again = ["export-torchscript", cases["convtasnet"], "-o", str(tmp_path / "convtasnet.pt")]
    assert main(again) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
