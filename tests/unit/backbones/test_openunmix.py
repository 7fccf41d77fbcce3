"""Open-Unmix: target network, Wiener post-processing, separator, and the converter from
Open-Unmix model folders (equality with the openunmix package)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.conftest import FIXTURES, has_module
from zoo.backbones.layers.filtering import invert_small, wiener
from zoo.backbones.openunmix import (
    OpenUnmix,
    OpenUnmixTarget,
    bandwidth_to_max_bin,
    umxhq_target,
)
from zoo.hub import registry
from zoo.hub.convert import ConversionError, from_openunmix
from zoo.hub.folder import sha256_file


def test_umxhq_parameter_count():
    # umxhq: n_fft 4096, 2 channels, hidden 512, 16 kHz bandwidth -> "about 8.9 M per target"
    assert bandwidth_to_max_bin(44100, 4096, 16000) == 1487
    assert sum(p.numel() for p in umxhq_target().parameters()) == 8_893_348


def test_shapes_and_gradients():
    m = OpenUnmixTarget(nb_bins=65, nb_channels=2, hidden_size=16, max_bin=40)
    spec = torch.rand(3, 2, 65, 20, requires_grad=True)
    out = m(spec)
    assert out.shape == spec.shape and (out >= 0).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert spec.grad is not None  # through the network input (the mask's mixture is detached)


@pytest.mark.skipif(not has_module("openunmix"), reason="openunmix not installed")
def test_loads_openunmix_weights_strictly_with_equal_outputs():
    from openunmix.model import OpenUnmix

    torch.manual_seed(0)
    peer = OpenUnmix(nb_bins=129, nb_channels=2, hidden_size=32, max_bin=100)
    with torch.no_grad():  # non-trivial statistics and scalings
        for p in peer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for bn in (peer.bn1, peer.bn2, peer.bn3):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
    peer.eval()
    ours = OpenUnmixTarget(nb_bins=129, nb_channels=2, hidden_size=32, max_bin=100).eval()
    ours.load_state_dict(peer.state_dict(), strict=True)
    spec = torch.rand(2, 2, 129, 31)
    with torch.no_grad():
        torch.testing.assert_close(ours(spec), peer(spec), atol=1e-5, rtol=1e-5)


def _separator(niter=1, softmask=False, residual=False, win=300, sources=("vocals", "drums")):
    return OpenUnmix(
        list(sources), 16000, 256, 64, 2, 16, 2, False, 6000, None, niter, softmask, residual, win
    ).eval()


def test_separator_shapes_gradients_and_training_mode_skips_em():
    model = _separator(residual=True)
    assert model.sources == ["vocals", "drums", "residual"] and model.n_src == 3
    x = torch.randn(2, 2, 3000)
    with torch.no_grad():
        assert model(x).shape == (2, 3, 2, 3000)
    model.train()
    est = model(x)
    est.sum().backward()
    assert all(p.grad is not None for p in model.target_models.parameters())
    with pytest.raises(ValueError, match=r"\(batch, 2 channels, time\).*\(2, 3000\)"):
        model(x[0])


def test_plain_masks_sum_to_mixture_with_residual_and_softmask():
    # Soft masks plus the residual add up to the mixture STFT: the outputs sum to the mixture.
    model = _separator(niter=0, softmask=True, residual=True)
    x = torch.randn(1, 2, 4000)
    with torch.no_grad():
        torch.testing.assert_close(model(x).sum(1), x, atol=1e-5, rtol=0)


def test_wiener_em_keeps_exact_sources_and_is_a_filter():
    # Two sources in disjoint frequency bands: EM from their true magnitudes recovers them, and
    # its estimates always add up to the mixture (a Wiener filter partitions the mixture), up to
    # the sqrt(eps) = 1e-5 diagonal loading of the mixture covariance.
    frames, bins = 40, 33
    a = torch.randn(frames, bins, 2, dtype=torch.complex128)
    b = torch.randn(frames, bins, 2, dtype=torch.complex128)
    a[:, 16:] = 0
    b[:, :16] = 0
    mix = a + b
    mags = torch.stack([a.abs(), b.abs()], -1)
    y = wiener(mags, mix, iterations=3)
    torch.testing.assert_close(y[..., 0], a, atol=1e-3, rtol=0)
    torch.testing.assert_close(y[..., 1], b, atol=1e-3, rtol=0)
    rough = torch.rand(frames, bins, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(wiener(rough, mix, iterations=2).sum(-1), mix, atol=1e-3, rtol=0)


def test_closed_form_inverse_equals_linalg():
    m = torch.randn(50, 2, 2, dtype=torch.complex128)
    m = m @ m.conj().transpose(-1, -2) + torch.eye(2)
    torch.testing.assert_close(invert_small(m), torch.linalg.inv(m))
    torch.testing.assert_close(invert_small(m[..., :1, :1]), 1 / m[..., :1, :1])


def test_openunmix_folder_fixture_converts_exactly():
    # tests/fixtures/openunmix_tiny: a model folder written as openunmix's train.py writes it,
    # with the openunmix 1.3.0 Separator's output (see make_openunmix_fixture.py).
    io = load_file(str(FIXTURES / "openunmix_tiny_io.safetensors"))
    sep = zoo.load(FIXTURES / "openunmix_tiny")
    assert sep.sources == ["accompaniment", "vocals"] and sep.sample_rate == 16000
    model, cfg = from_openunmix(FIXTURES / "openunmix_tiny", targets=["vocals", "accompaniment"])
    assert cfg["init_args"]["max_bin"] == 97 and cfg["init_args"]["hidden_size"] == 16
    with torch.no_grad():
        out = model(io["input"])
        assert (out - io["output"]).abs().max() <= 1e-4
        torch.testing.assert_close(sep(io["input"]), out.flip(1))


def test_openunmix_folder_errors_name_the_file(tmp_path):
    shutil.copytree(FIXTURES / "openunmix_tiny", tmp_path / "m")
    (tmp_path / "m" / "separator.json").unlink()
    with pytest.raises(ConversionError, match="separator.json is missing"):
        from_openunmix(tmp_path / "m")
    with pytest.raises(ConversionError, match="bass.pth or bass-<hash>.pth, found no"):
        from_openunmix(
            tmp_path / "m",
            targets=["bass"],
            separator={"nfft": 256, "nhop": 64, "sample_rate": 16000},
        )
    with pytest.raises(ConversionError, match="nfft=512 gives 257 bins, the weights have 129"):
        from_openunmix(tmp_path / "m", separator={"nfft": 512, "nhop": 64, "sample_rate": 16000})


def test_registry_entry_builds_umxhq_from_published_file_names(tmp_path, monkeypatch):
    # Published umxhq files are <target>-<sha256 prefix>.pth state dicts with the old extra keys;
    # here random umxhq-sized weights stand in for them in the cache.
    entry = registry.list_models()["umxhq-musdb18hq-openunmix"]
    folder = tmp_path / "umxhq-musdb18hq-openunmix"
    folder.mkdir()
    net = umxhq_target()
    state = {**net.state_dict(), "stft.window": torch.hann_window(4096), "sample_rate": 44100.0}
    prefixes = {}
    for target in entry["args"]["targets"]:
        path = folder / f"{target}.pth"
        torch.save(state, path)
        digest = sha256_file(path)
        prefixes[target] = digest[:8]
    entry = json.loads(json.dumps(entry))
    entry["files"] = {
        f"{t}.pth": {"url": "unused", "sha256_prefix": p} for t, p in prefixes.items()
    }
    monkeypatch.setitem(registry.REGISTRY, "umxhq-musdb18hq-openunmix", entry)
    sep = zoo.load("umxhq-musdb18hq-openunmix", cache_dir=tmp_path)
    assert sep.sources == ["vocals", "drums", "bass", "other"] and sep.sample_rate == 44100
    n = sum(p.numel() for p in sep.backbone.target_models["vocals"].parameters())
    assert n == 8_893_348
    entry["files"]["vocals.pth"]["sha256_prefix"] = (
        "ffffffff" if prefixes["vocals"][0] != "f" else "00000000"
    )
    with pytest.raises(registry.DownloadError, match="not in the cache"):
        zoo.load("umxhq-musdb18hq-openunmix", cache_dir=tmp_path)


@pytest.mark.skipif(not has_module("openunmix"), reason="openunmix not installed")
@pytest.mark.parametrize(
    "niter,softmask,residual,win",
    [(0, False, False, 300), (1, False, False, 300), (2, True, True, 7)],
)
def test_separator_equals_openunmix(niter, softmask, residual, win):
    from openunmix.model import OpenUnmix as PeerTarget
    from openunmix.model import Separator

    ours = _separator(niter, softmask, residual, win)
    peers = {}
    for name, net in ours.target_models.items():
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
        peers[name] = PeerTarget(
            nb_bins=129, nb_channels=2, hidden_size=16, nb_layers=2, max_bin=net.nb_bins
        )
        peers[name].load_state_dict(net.state_dict(), strict=True)
    peer = Separator(
        peers,
        niter=niter,
        softmask=softmask,
        residual=residual,
        sample_rate=16000,
        n_fft=256,
        n_hop=64,
        nb_channels=2,
        wiener_win_len=win,
    ).eval()
    x = torch.randn(2, 2, 5000)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), peer(x), atol=1e-4, rtol=0)


def test_input_stats_standardise_the_training_magnitudes():
    torch.manual_seed(0)
    model = _separator(sources=("vocals", "drums"))
    batches = [torch.randn(2, 2, 4000) * (1 + i) for i in range(3)]
    keys = model.fit_input_stats(iter(batches))
    assert keys == [
        f"target_models.{s}.input_{k}" for s in ("vocals", "drums") for k in ("mean", "scale")
    ]
    mags = torch.cat(
        [model.stft(b).abs().mean(1).transpose(1, 2).reshape(-1, 129) for b in batches]
    )
    for m in model.target_models.values():  # both targets get the same statistics
        x = (mags[:, : m.nb_bins] + m.input_mean) * m.input_scale
        torch.testing.assert_close(x.mean(0), torch.zeros(m.nb_bins), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            x.std(0, unbiased=False), torch.ones(m.nb_bins), atol=1e-4, rtol=0
        )
    with pytest.raises(ValueError, match="no mixtures"):
        model.fit_input_stats(iter([]))


def test_fresh_fit_initialises_input_stats_from_training_batches(quiet_trainer):
    import lightning as L

    from zoo.losses import FixedOrderLoss
    from zoo.system import SeparationSystem

    class Batches(L.LightningDataModule):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            ref = torch.randn(6, 2, 2, 2000, generator=g) * 3
            self.items = [{"mix": r.sum(0), "ref": r} for r in ref]

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.items, batch_size=2)

    def fit(n_batches):
        torch.manual_seed(0)
        system = SeparationSystem(_separator(), FixedOrderLoss(), input_stats_batches=n_batches)
        trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
        trainer.fit(system, datamodule=Batches())
        return system.backbone

    expected = _separator()
    expected.fit_input_stats(b["mix"] for b in Batches().train_dataloader())  # all 3 batches
    got = fit(3).target_models["vocals"]
    want = expected.target_models["vocals"]
    # one optimiser step (Adam, lr 1e-3) moves each value by at most ~1e-3
    torch.testing.assert_close(got.input_mean, want.input_mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(got.input_scale, want.input_scale, atol=2e-3, rtol=0)
    assert fit(0).target_models["vocals"].input_mean.abs().max() < 2e-3  # left at zero


@pytest.mark.parametrize(
    "variant", [{}, {"softmask": True}, {"residual": True, "sources": ["vocals"]}]
)
def test_real_valued_stft_path_equals_the_separator_without_em(variant):
    """The exported graphs' path (real tensors only) computes niter=0's ratio masking."""
    torch.manual_seed(0)
    model = OpenUnmix(n_fft=256, hop=64, hidden_size=8, bandwidth=None, niter=0, **variant)
    model.eval()
    x = torch.randn(2, 2, 5000)
    with torch.no_grad():
        want = model(x)
        got = model.use_real_stft()(x)
    assert got.shape == want.shape == (2, model.n_src, 2, 5000)
    assert (got - want).abs().max() <= 1e-5
