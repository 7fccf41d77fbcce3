"""BS-RoFormer and Mel-RoFormer: shapes, gradients, the paper sizes, and equality with the
``bs-roformer`` package (0.3.10, the layout community checkpoints use) through the converter."""

import pytest
import torch
import yaml

import zoo
from tests.conftest import has_module
from zoo.backbones import RoFormer, bs_roformer_paper, mel_roformer_paper
from zoo.backbones.roformer import mel_bands
from zoo.hub.convert import ConversionError, from_roformer

SMALL_BANDS = (2,) * 8 + (4,) * 4 + (8,) * 2 + (17,)  # 65 bins: n_fft 128
SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, n_fft=128, hop=32, win_length=128)
needs_peer = pytest.mark.skipif(
    not has_module("bs_roformer"), reason="peer not installed (make bench-install)"
)


@pytest.mark.parametrize("bands", ["split", "mel"])
def test_shapes_gradients_and_errors(bands):
    torch.manual_seed(0)
    extra = {"band_widths": SMALL_BANDS} if bands == "split" else {"n_bands": 12}
    model = RoFormer(["vocals", "drums"], 8000, bands, **extra, **SMALL)
    x = torch.randn(2, 2, 3001)
    est = model(x)
    assert est.shape == (2, 2, 2, 3001)
    est.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.architecture == ("BS-RoFormer" if bands == "split" else "Mel-RoFormer")
    with pytest.raises(ValueError, match="2 channels"):
        model(x[:, :1])
    with pytest.raises(ValueError, match="band_widths sum to 64 bins"):
        RoFormer(["vocals"], 8000, "split", SMALL_BANDS[:-1] + (16,), **SMALL)


def test_paper_sizes():
    # L=6, D=384, 8 x 64 heads, 4 stems (one mask estimator each: most of the weights); equal
    # to the bs-roformer package's count for the same configuration (without its fixed rotary
    # frequencies), checked in test_paper_sizes_equal_the_packages
    assert sum(p.numel() for p in bs_roformer_paper().parameters()) == 222_335_748
    assert sum(p.numel() for p in mel_roformer_paper().parameters()) == 265_999_020


@needs_peer
@pytest.mark.peers
def test_paper_sizes_equal_the_packages():
    from bs_roformer import BSRoformer, MelBandRoformer

    common = dict(dim=384, depth=6, stereo=True, num_stems=4, time_transformer_depth=1,
                  freq_transformer_depth=1)  # fmt: skip
    for ref, ours in ((BSRoformer(**common, mask_estimator_depth=2), bs_roformer_paper()),
                      (MelBandRoformer(**common, num_bands=60), mel_roformer_paper())):  # fmt: skip
        count = sum(p.numel() for n, p in ref.named_parameters() if "rotary" not in n)
        assert count == sum(p.numel() for p in ours.parameters())


def test_mel_bands_are_librosas_slaney_filterbank_pattern():
    cover = mel_bands(60, 2048, 44100)
    assert cover.shape == (60, 1025) and cover.any(0).all()
    if has_module("librosa"):
        import librosa

        fb = torch.from_numpy(librosa.filters.mel(sr=44100, n_fft=2048, n_mels=60))
        fb[0, 0] = fb[-1, -1] = 1.0
        assert torch.equal(cover, fb > 0)


def _config(tmp_path, model, stems=("vocals", "other"), target=None, **extra):
    cfg = {"audio": {"sample_rate": 8000},
           "model": {**model, **extra},
           "training": {"instruments": list(stems), **({"target_instrument": target}
                                                          if target else {})}}  # fmt: skip
    text = yaml.safe_dump(cfg).replace("freqs_per_bands:\n", "freqs_per_bands: !!python/tuple\n")
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


@needs_peer
@pytest.mark.peers
@pytest.mark.parametrize("bands", ["split", "mel"])
def test_equals_the_bs_roformer_package_through_the_converter(bands, tmp_path):
    from bs_roformer import BSRoformer, MelBandRoformer

    torch.manual_seed(0)
    common = dict(dim=32, depth=2, stereo=True, time_transformer_depth=1,
                  freq_transformer_depth=1, dim_head=16, heads=2, stft_n_fft=128,
                  stft_hop_length=32, stft_win_length=128, mask_estimator_depth=2)  # fmt: skip
    if bands == "split":
        model = dict(common, num_stems=2, freqs_per_bands=list(SMALL_BANDS))
        ref = BSRoformer(**{**model, "freqs_per_bands": SMALL_BANDS})
        _config(tmp_path, model)
    else:
        model = dict(common, num_stems=1, num_bands=12, sample_rate=8000, attn_dropout=0.1)
        ref = MelBandRoformer(**{**model, "attn_dropout": 0.0, "ff_dropout": 0.0})
        _config(tmp_path, model, target="vocals")
    ckpt = tmp_path / "model.ckpt"
    torch.save(ref.state_dict(), ckpt)  # what the training scripts save
    ours = zoo.load(ckpt)  # the format is recognised; the config beside it is read
    assert ours.sources == (["vocals", "other"] if bands == "split" else ["vocals"])
    x = torch.randn(2, 2, 4000)
    with torch.no_grad():
        want = ref.eval()(x)
        got = ours(x)
    want = want if want.ndim == 4 else want[:, None]  # one stem: (B, C, T)
    n = min(want.shape[-1], got.shape[-1])  # the package's iSTFT drops the tail
    assert (got[..., :n] - want[..., :n]).abs().max() <= 1e-4 * want.abs().max()


def test_options_the_zoo_does_not_build_are_refused_by_name(tmp_path):
    model = RoFormer(["vocals"], 8000, "split", SMALL_BANDS, audio_channels=2, **SMALL)
    torch.save(model.state_dict(), tmp_path / "model.ckpt")
    base = dict(dim=32, depth=2, stereo=True, num_stems=1, time_transformer_depth=1,
                freq_transformer_depth=1, dim_head=16, heads=2, stft_n_fft=128,
                stft_hop_length=32, stft_win_length=128,
                freqs_per_bands=list(SMALL_BANDS))  # fmt: skip
    cfg = _config(tmp_path, base, target="vocals")
    backbone, config = from_roformer(tmp_path / "model.ckpt", cfg)  # time/freq depth 1 each
    assert config["init_args"]["mask_depth"] == 2 and backbone.n_src == 1
    for option, value in (("skip_connection", True), ("linear_transformer_depth", 1),
                          ("stft_normalized", True), ("use_fancy_thing", 3)):  # fmt: skip
        cfg = _config(tmp_path, base, target="vocals", **{option: value})
        with pytest.raises(ConversionError, match=f"model.{option}.* does not build"):
            from_roformer(tmp_path / "model.ckpt", cfg)
    state = model.state_dict()
    state["layers.0.0.layers.0.0.to_value_residual_mix.weight"] = torch.zeros(2, 32)
    torch.save(state, tmp_path / "later.ckpt")
    cfg = _config(tmp_path, base, target="vocals")
    with pytest.raises(ConversionError, match="value residuals or hyper-connections"):
        from_roformer(tmp_path / "later.ckpt", cfg)


def test_the_registry_entries_load_the_community_layout_once_trusted(tmp_path, monkeypatch):
    """The published RoFormer entries' shape (a checkpoint + its YAML, no sha256 recorded),
    served from local files: held back until trusted, then converted as zoo.load does."""
    from zoo.hub import registry

    for name in ("bsroformer-vocals-viperx", "melroformer-vocals-viperx"):
        entry = registry.list_models()[name]
        assert entry["format"] == "roformer" and entry["args"]["config"] in entry["files"]
        assert entry["weights"] in entry["files"]
    model = RoFormer(["vocals"], 8000, "split", SMALL_BANDS, **SMALL)
    base = dict(dim=32, depth=2, stereo=True, num_stems=1, time_transformer_depth=1,
                freq_transformer_depth=1, dim_head=16, heads=2, stft_n_fft=128,
                stft_hop_length=32, stft_win_length=128,
                freqs_per_bands=list(SMALL_BANDS))  # fmt: skip
    src = tmp_path / "published"
    src.mkdir()
    torch.save(model.state_dict(), src / "m.ckpt")
    _config(src, base, target="vocals").rename(src / "m.yaml")
    entry = {"format": "roformer", "description": "test", "weights": "m.ckpt",
             "args": {"config": "m.yaml"},
             "files": {f: {"url": (src / f).as_uri(), "sha256": None}
                       for f in ("m.ckpt", "m.yaml")}}  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, "tiny-roformer", entry)
    monkeypatch.setenv("ZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(registry.DownloadError, match="--trust"):
        zoo.load("tiny-roformer", download=True)
    sep = zoo.load("tiny-roformer", download=True, trust=True)
    x = torch.randn(1, 2, 2000)
    with torch.no_grad():
        assert torch.equal(sep(x), model.eval()(x))
