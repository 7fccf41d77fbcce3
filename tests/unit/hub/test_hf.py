"""The Hugging Face Hub path: ``zoo push`` then ``zoo.load("hf://owner/repo[@revision]")``
through the real ``huggingface_hub`` client against a local fake hub (tests/fakehub.py, on
127.0.0.1; never the network), the offline mode, and registry files without a recorded sha256
(trusted only when the user says so)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from tests.conftest import TINY_CONVTASNET
from tests.fakehub import FakeHub
from zoo.backbones import ConvTasNet
from zoo.cli import main
from zoo.hub import registry
from zoo.hub.folder import export_model, sha256_file
from zoo.hub.hf import HubError, parse_url

REPO = Path(__file__).resolve().parents[3]
SPEC = {"class_path": "zoo.backbones.ConvTasNet", "init_args": TINY_CONVTASNET}
METRICS = {"recipe": "libri2mix_pit", "mini": True, "data_source": "built-in mini dataset "
           "(synthetic)", "n_items": 24, "si_sdri": 4.32, "si_sdr": 4.36, "protocol": "blind",
           "architecture": "Conv-TasNet", "dataset": "Libri2Mix", "split": "test"}  # fmt: skip


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # the standard cache, under HF_HOME as the library lays it out
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        yield fake


def _model(path, seed=0):
    torch.manual_seed(seed)
    net = ConvTasNet(**TINY_CONVTASNET).eval()
    prov = {"recipe": "libri2mix_pit", "mini": True, "git_sha": "abc123", "metrics": METRICS}
    return net, export_model(net, SPEC, path, provenance=prov)


def test_push_then_load_round_trips_with_identical_outputs_and_a_model_card(hub, tmp_path):
    net, folder = _model(tmp_path / "m")
    assert main(["push", str(folder), "me/tiny-pit"]) == 0
    commit = hub.repos["me/tiny-pit"][-1]["sha"]
    sep = zoo.load(f"hf://me/tiny-pit@{commit}")
    x = torch.randn(2, 1, 1200)
    with torch.no_grad():
        assert torch.equal(sep(x), net(x))
    assert sep.config["hub"] == {"repo": "me/tiny-pit", "revision": commit, "commit": commit,
                                 "url": f"hf://me/tiny-pit@{commit}"}  # fmt: skip
    # the files on the hub: the folder's own, byte for byte, and the generated card
    files = hub.repos["me/tiny-pit"][-1]["files"]
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "separation-zoo" and "mini-dataset" in meta["tags"]
    for text in ("Conv-TasNet (libri2mix_pit recipe)", "**mini dataset**", "| si_sdri | 4.32 dB |",
                 'zoo.load("hf://me/tiny-pit")', '"class_path": "zoo.backbones.ConvTasNet"',
                 sha256_file(folder / "model.safetensors")):  # fmt: skip
        assert text in card, text
    # it sits in the standard cache, under the commit
    cached = tmp_path / "hf" / "hub" / "models--me--tiny-pit" / "snapshots" / commit
    assert (cached / "config.json").is_file()


def test_a_revision_pins_the_download(hub, tmp_path):
    first, f1 = _model(tmp_path / "a", seed=0)
    second, f2 = _model(tmp_path / "b", seed=1)
    r1 = zoo.hub.hf.push(str(f1), "me/pinned")
    r2 = zoo.hub.hf.push(str(f2), "me/pinned")
    assert r1["commit"] != r2["commit"] and r1["url"] == f"hf://me/pinned@{r1['commit']}"
    x = torch.randn(1, 1, 800)
    with torch.no_grad():
        assert torch.equal(zoo.load(r1["url"])(x), first(x))
        latest = zoo.load("hf://me/pinned")
        assert torch.equal(latest(x), second(x))
    assert latest.config["hub"]["commit"] == r2["commit"]
    assert latest.config["hub"]["revision"] == "main"


def test_offline_mode_loads_from_the_cache_without_a_request(hub, tmp_path):
    net, folder = _model(tmp_path / "m")
    url = zoo.hub.hf.push(str(folder), "me/offline")["url"]
    zoo.load(url)  # online once, by commit and by branch: now in the cache (and refs/main)
    zoo.load("hf://me/offline")
    x = torch.randn(1, 1, 640)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(net(x), tmp_path / "ref.pt")
    code = (
        "import sys, torch, zoo\n"
        "x = torch.load(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    y = zoo.load(sys.argv[1])(x)\n"
        "assert torch.equal(y, torch.load(sys.argv[3]))\n"
        "try:\n"
        "    zoo.load('hf://me/never-downloaded')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(REPO)}  # fmt: skip
    before = list(hub.requests)
    for target in (url, "hf://me/offline"):  # a pinned commit, and a branch through refs/main
        run = subprocess.run([sys.executable, "-c", code, target, tmp_path / "x.pt",
                              tmp_path / "ref.pt"], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        assert "HubError hf://me/never-downloaded is not in the Hugging Face cache and " \
               "HF_HUB_OFFLINE is set" in run.stdout  # fmt: skip
    assert hub.requests == before  # nothing reached the hub


def test_hub_errors_name_the_repo_in_one_line(hub, tmp_path):
    with pytest.raises(HubError, match=r"hf://me/nothing: no such model repo on http://127"):
        zoo.load("hf://me/nothing")
    _, folder = _model(tmp_path / "m")
    zoo.hub.hf.push(str(folder), "me/r")
    with pytest.raises(HubError, match=r"hf://me/r@0{40}: the repo has no revision '0{40}'"):
        zoo.load("hf://me/r@" + "0" * 40)
    with pytest.raises(HubError, match=r"a hub model is hf://owner/repo"):
        parse_url("hf://just-a-name")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set: unset it to push"):
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            zoo.hub.hf.push(str(folder), "me/r")
        finally:
            del os.environ["HF_HUB_OFFLINE"]


def test_push_converts_what_is_not_a_zoo_folder(hub, tmp_path):
    # a registry name (here the packaged tiny causal model): loaded, then written as a zoo folder
    r = zoo.hub.hf.push("convtasnet-causal-tiny-random", "me/causal", download=True)
    sep = zoo.load(r["url"])
    ref = zoo.load("convtasnet-causal-tiny-random")
    x = torch.randn(1, 1, 500)
    with torch.no_grad():
        assert torch.equal(sep(x), ref(x))
    assert sep.backbone.causal  # and it still streams
    assert zoo.stream(sep).latency == 16


@pytest.fixture
def unpinned(tmp_path, monkeypatch):
    """A registry entry whose files have no sha256 (as published weights fetched nowhere yet),
    served from a local file URL; the user's pin file under tmp_path."""
    src = tmp_path / "published"
    shutil.copytree(registry._source_url("package:tiny/convtasnet-tiny-random")[7:], src)
    entry = {"format": "zoo", "description": "unpinned test entry",
             "files": {f: {"url": (src / f).as_uri(), "sha256": None}
                       for f in ("model.safetensors", "config.json")}}  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, "unpinned-tiny", entry)
    monkeypatch.setenv("ZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return src


def test_a_file_without_a_recorded_sha256_is_used_only_once_trusted(unpinned, tmp_path, capsys):
    digest = sha256_file(unpinned / "model.safetensors")
    with pytest.raises(registry.DownloadError, match=rf"has sha256 {digest}.*--trust"):
        zoo.load("unpinned-tiny", download=True)
    assert not (tmp_path / "cache" / "unpinned-tiny" / "model.safetensors").exists()
    assert not (tmp_path / "pins.json").exists()
    capsys.readouterr()
    assert main(["download", "unpinned-tiny"]) == 2  # still not trusted
    assert f"has sha256 {digest}" in capsys.readouterr().err
    assert main(["download", "unpinned-tiny", "--trust"]) == 0
    assert f"trusting unpinned-tiny/model.safetensors sha256 {digest}" in capsys.readouterr().out
    pins = json.loads((tmp_path / "pins.json").read_text())
    assert pins["unpinned-tiny"]["model.safetensors"] == digest
    zoo.load("unpinned-tiny")  # from the cache, checked against the pin
    # the publisher's file changes: the pin refuses it
    (tmp_path / "cache" / "unpinned-tiny" / "model.safetensors").unlink()
    data = bytearray((unpinned / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (unpinned / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(registry.DownloadError, match="failed its check"):
        zoo.load("unpinned-tiny", download=True)


def test_a_cached_file_nobody_vouched_for_is_held_back_not_deleted(unpinned, tmp_path):
    """A file already in the cache for an entry without a sha256 (an older version's unchecked
    download, or one the user put there) is moved aside, never deleted, and used once trusted."""
    folder = tmp_path / "cache" / "unpinned-tiny"
    folder.mkdir(parents=True)
    for f in ("model.safetensors", "config.json"):
        (folder / f).write_bytes((unpinned / f).read_bytes())
    digest = sha256_file(folder / "model.safetensors")
    with pytest.raises(registry.DownloadError, match=rf"has sha256 {digest}"):
        zoo.load("unpinned-tiny")  # no download needed to see the hash; nothing is fetched
    assert (folder / ".untrusted" / "model.safetensors").read_bytes() == (
        unpinned / "model.safetensors"
    ).read_bytes()
    zoo.load("unpinned-tiny", trust=True)  # accepted from the cache: no download
    assert (folder / "model.safetensors").is_file() and not list((folder / ".untrusted").iterdir())


def test_an_unreachable_hub_is_one_line_naming_the_endpoint(tmp_path, monkeypatch, capsys):
    import socket

    from zoo.cli import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _, folder = _model(tmp_path / "m")
    assert main(["push", str(folder), "me/r"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and endpoint in err and "me/r" in err
