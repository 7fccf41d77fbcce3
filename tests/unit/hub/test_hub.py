"""Zoo format, registry downloads and converters."""

import json
import time

import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.conftest import FIXTURES, TINY_CONVTASNET, needs_asteroid
from zoo.backbones import ConvTasNet
from zoo.hub import registry
from zoo.hub.convert import ConversionError, from_asteroid, from_torchaudio_convtasnet
from zoo.hub.folder import ModelFormatError, build_backbone, export_model, load_backbone

SMALL = TINY_CONVTASNET


def test_export_then_load_gives_identical_outputs(tmp_path):
    model = ConvTasNet(n_src=3, **SMALL).eval()
    export_model(
        model,
        {"class_path": "zoo.backbones.ConvTasNet", "init_args": {"n_src": 3, **SMALL}},
        tmp_path / "m",
        provenance={"recipe": "unit"},
    )
    sep = zoo.load(tmp_path / "m")
    x = torch.randn(2, 1, 1000)
    with torch.no_grad():
        assert torch.equal(sep(x), model(x))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["sample_rate"] == 8000 and cfg["sources"] == []  # anonymous outputs
    assert sep.sources == ["s1", "s2", "s3"] and not sep.ordered
    assert not sep.training


def test_loading_never_builds_foreign_classes_and_checks_weights(tmp_path):
    with pytest.raises(ModelFormatError, match="os.system"):
        build_backbone("os.system", {})
    model = ConvTasNet(**SMALL)
    out = export_model(
        model, {"class_path": "zoo.backbones.ConvTasNet", "init_args": SMALL}, tmp_path / "m"
    )
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="sha256"):
        load_backbone(out)


def test_registry_download_is_verified_and_cached(tmp_path):
    with pytest.raises(registry.DownloadError, match="download=True"):
        zoo.load("convtasnet-tiny-random", cache_dir=tmp_path)
    sep = zoo.load("convtasnet-tiny-random", download=True, cache_dir=tmp_path)
    assert sep.n_src == 2 and (tmp_path / "convtasnet-tiny-random" / "model.safetensors").is_file()
    zoo.load("convtasnet-tiny-random", cache_dir=tmp_path)  # now from the cache, offline


def test_wrong_sha256_is_refused_and_the_file_not_kept(tmp_path, monkeypatch):
    entry = json.loads(json.dumps(registry.list_models()["tdcnpp-tiny-random"]))
    entry["files"]["model.safetensors"]["sha256"] = "0" * 64
    monkeypatch.setitem(registry.REGISTRY, "tdcnpp-tiny-random", entry)
    with pytest.raises(registry.DownloadError, match="not kept"):
        zoo.load("tdcnpp-tiny-random", download=True, cache_dir=tmp_path)
    folder = tmp_path / "tdcnpp-tiny-random"
    assert not (folder / "model.safetensors").exists()
    assert not list(folder.glob("*.part"))


def test_unknown_name_lists_the_registry():
    with pytest.raises(KeyError, match="convtasnet-tiny-random"):
        zoo.load("no-such-model")


def test_tiny_models_regenerate_identically(tmp_path):
    from zoo.hub.tiny import write_all

    entries = write_all(tmp_path)
    for name, e in entries.items():
        shipped = registry.list_models()[name]["files"]["model.safetensors"]["sha256"]
        assert e["files"]["model.safetensors"]["sha256"] == shipped


def test_asteroid_checkpoint_fixture_converts_exactly():
    io = load_file(str(FIXTURES / "asteroid_convtasnet_tiny_io.safetensors"))
    model, cfg = from_asteroid(FIXTURES / "asteroid_convtasnet_tiny.pth")
    assert cfg["init_args"]["n_blocks"] == 2 and cfg["init_args"]["mask_act"] == "sigmoid"
    with torch.no_grad():
        out = model(io["input"])[:, :, 0]
    assert (out - io["output"]).abs().max() <= 1e-4


def test_asteroid_plain_safe_loading_refuses_but_converter_loads():
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(FIXTURES / "asteroid_convtasnet_tiny.pth", weights_only=True)
    with pytest.raises(ConversionError, match="model_name"):
        from_asteroid({"state_dict": {}})


@needs_asteroid
def test_asteroid_live_conversion(tmp_path):
    from asteroid.models import ConvTasNet as AsteroidConvTasNet

    peer = AsteroidConvTasNet(
        n_src=3,
        n_filters=32,
        bn_chan=16,
        hid_chan=32,
        skip_chan=16,
        n_blocks=3,
        n_repeats=2,
        mask_act="relu",
    ).eval()
    torch.save(peer.serialize(), tmp_path / "m.pth")
    model, _ = from_asteroid(tmp_path / "m.pth")
    x = torch.randn(1, 1, 5001)
    with torch.no_grad():
        assert (model(x)[:, :, 0] - peer(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("length", [8000, 8003, 7999])
def test_torchaudio_convtasnet_converts_exactly(length, tmp_path):
    from torchaudio.models import ConvTasNet as TAConvTasNet

    torch.manual_seed(3)
    peer = TAConvTasNet(
        num_sources=2,
        enc_num_feats=64,
        msk_num_feats=16,
        msk_num_hidden_feats=32,
        msk_num_layers=3,
        msk_num_stacks=2,
        msk_activate="relu",
    ).eval()
    torch.save(peer.state_dict(), tmp_path / "ta.pt")
    model, cfg = from_torchaudio_convtasnet(tmp_path / "ta.pt", n_blocks=3, n_repeats=2)
    x = torch.randn(2, 1, length)
    with torch.no_grad():
        assert (model(x)[:, :, 0] - peer(x)).abs().max() <= 1e-4
    with pytest.raises(ConversionError, match="6 conv blocks"):
        from_torchaudio_convtasnet(tmp_path / "ta.pt")  # 8 x 3 does not fit


def _export(tmp_path, name="m", **kw):
    args = {**TINY_CONVTASNET, **kw}
    model = ConvTasNet(**args)
    return export_model(
        model, {"class_path": "zoo.backbones.ConvTasNet", "init_args": args}, tmp_path / name
    )


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_broken_model_folders_are_named_and_refused_early(tmp_path):
    folder = _export(tmp_path)
    # a config asking for a far bigger network than its weights: refused before it is built
    bb = json.loads((folder / "config.json").read_text())["backbone"]
    huge = {**bb, "init_args": {**bb["init_args"], "n_filters": 200_000, "hid_chan": 100_000}}
    _edit_config(folder, backbone=huge)
    with pytest.raises(ModelFormatError, match=r"config.json: the network it describes is larg"):
        load_backbone(folder)
    # ... or far deeper (a 0.7 KB config describing 200000 repeats): refused in a moment
    deep = {**bb, "init_args": {**bb["init_args"], "n_repeats": 200_000}}
    _edit_config(folder, backbone=deep)
    start = time.perf_counter()
    with pytest.raises(ModelFormatError, match=r"larger than its weights file"):
        load_backbone(folder)
    assert time.perf_counter() - start < 5
    # the same number of values in another layout: the shapes differ
    wide = {**bb, "init_args": {**bb["init_args"], "n_filters": bb["init_args"]["n_filters"] - 2}}
    _edit_config(folder, backbone=wide)
    with pytest.raises(ModelFormatError, match=r"config.json: the network it describes does not"):
        load_backbone(folder)
    _edit_config(folder, backbone={**bb, "init_args": {**bb["init_args"], "colour": "red"}})
    with pytest.raises(ModelFormatError, match=r"init_args do not build a model .*colour"):
        load_backbone(folder)
    _edit_config(folder, backbone="ConvTasNet")
    with pytest.raises(ModelFormatError, match=r"'backbone' must be"):
        load_backbone(folder)
    (folder / "config.json").write_text("{" + " " * (2 << 20) + "}")
    with pytest.raises(ModelFormatError, match="refused unread"):
        load_backbone(folder)
    corrupt = _export(tmp_path, "c")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    _edit_config(corrupt, weights_sha256=None)
    with pytest.raises(ModelFormatError, match=r"model.safetensors: not a readable safetensors"):
        load_backbone(corrupt)


def test_a_pickle_with_code_is_refused_with_a_message_not_a_traceback(tmp_path, capsys):
    import pickle

    import zoo.hub.convert as convert

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(ConversionError, match=r"evil.pth: refused: it holds Python objects"):
        convert.load_checkpoint(path)
    from zoo.cli import main

    assert main(["separate", str(path), str(path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr()
    assert "pwned" not in err.out and "weights_only=False" not in err.err
    assert len(err.err.strip().splitlines()) == 1


def test_what_is_not_a_model_is_named_in_one_line(tmp_path, capsys):
    import os

    from zoo.cli import main

    text = tmp_path / "shadow"
    text.write_text("root:*:19000:0:99999:7:::\n")  # a text file where a model was expected
    folder = tmp_path / "fifo"
    folder.mkdir()
    os.mkfifo(folder / "config.json")  # reading it would block forever
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, what in ((text, "not a readable torch checkpoint"),
                       (folder, "config.json is not a regular file"),
                       (empty, "not a model folder")):  # fmt: skip
        with pytest.raises(ValueError, match=what):
            zoo.load(path)
        assert main(["evaluate", str(path), "--recipe", "libri2mix_pit"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and what in err
