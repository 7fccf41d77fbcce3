"""HTDemucs: shapes and gradients, the segment protocol, the paper size, and equality with the
``demucs`` package (4.1.0, bench extra) through the converter for every form demucs publishes:
a ``.th`` package (class pickled by reference, half-precision state, a Fraction segment), a
``.safetensors`` file with JSON metadata, and bags of models."""

import json
from fractions import Fraction

import pytest
import torch

import zoo
from tests.conftest import has_module
from zoo.backbones import HTDemucs, htdemucs_paper
from zoo.backbones.capabilities import ExportRefused
from zoo.hub.convert import ConversionError
from zoo.hub.convert_demucs import from_demucs

SOURCES = ["drums", "bass", "other", "vocals"]
# small but every path: 4 frequency layers (the last one folds 8 bins and meets the time
# branch), DConv in encoder and decoder, bottom channels, 2 transformer layers (self + cross)
TINY = dict(channels=8, depth=4, t_layers=2, t_heads=2, dconv_mode=3, bottom_channels=16)
TINY_DEMUCS = dict(TINY, nfft=4096, samplerate=8000)
needs_peer = pytest.mark.skipif(
    not has_module("demucs"), reason="peer not installed (make bench-install)"
)


def _tiny(**kw) -> HTDemucs:
    return HTDemucs(SOURCES, sample_rate=8000, segment=1.0, n_fft=4096, **TINY, **kw)


@pytest.mark.parametrize("n_fft", [4096, 1024])
def test_every_parameter_trains(n_fft):
    """n_fft 4096: the branches stay apart down to the transformer; 1024: the last frequency
    layer folds the remaining bins and the branches meet before it, so the transformer's
    waveform output feeds nothing: the layers that would compute it are not built (DDP
    refuses parameters without gradients)."""
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, sample_rate=8000, segment=1.0, **{**TINY, "n_fft": n_fft})
    model(torch.randn(2, 2, 6000)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    net = model.models[0]
    assert net.time_out == (n_fft == 4096)
    assert len(net.crosstransformer.layers_t) == (2 if n_fft == 4096 else 1)


def test_shapes_gradients_segment_and_export_refusal():
    torch.manual_seed(0)
    model = _tiny()
    x = torch.randn(2, 2, 6000)
    out = model(x)  # training: any length, no padding
    assert out.shape == (2, 4, 2, 6000)
    model.eval()
    with torch.no_grad():
        short = model(x[..., :5000])  # padded to the 1 s segment on both sides, trimmed back
        long = model(torch.randn(1, 2, 20000))  # 2.5 segments: overlapping segments
    assert short.shape == (2, 4, 2, 5000) and long.shape == (1, 4, 2, 20000)
    with pytest.raises(ValueError, match=r"takes \(batch, 2 channels, time\)"):
        model(torch.randn(1, 1, 100))
    with pytest.raises(ExportRefused, match="complex STFT"):
        model.export_form()
    with pytest.raises(ValueError, match="positive total weight"):
        _tiny(bag_weights=[[1, 0, 0, 0], [1, 0, 0, 0]])


def test_a_bag_exports_to_a_zoo_folder_and_loads_back(tmp_path):
    """What every recipe does with its trained model (loading builds it on the meta device
    first, to check the weights' shapes)."""
    from zoo.hub.folder import export_model

    torch.manual_seed(0)
    args = dict(sources=SOURCES, sample_rate=8000, segment=1.0, n_fft=1024, **TINY,
                bag_weights=[[1, 0, 0, 1], [0, 1, 1, 1]])  # fmt: skip
    model = HTDemucs(**args).eval()
    folder = export_model(model, {"class_path": "zoo.backbones.HTDemucs", "init_args": args},
                          tmp_path / "model")  # fmt: skip
    loaded = zoo.load(folder)
    x = torch.randn(1, 2, 3000)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_paper_size():
    """demucs' default configuration: 26,899,536 parameters (26.9 M, the paper's HT Demucs)."""
    model = htdemucs_paper()
    assert sum(p.numel() for p in model.parameters()) == 26_899_536
    assert model.segment_samples == 343980  # 7.8 s at 44.1 kHz


@needs_peer
@pytest.mark.peers
def test_paper_size_equals_the_package():
    from demucs.htdemucs import HTDemucs as Peer

    peer = Peer(SOURCES, segment=Fraction(39, 5))
    assert sum(p.numel() for p in peer.parameters()) == sum(
        p.numel() for p in htdemucs_paper().parameters()
    )


def _peer(seed: int, **kw):
    from demucs.htdemucs import HTDemucs as Peer

    torch.manual_seed(seed)
    return Peer(SOURCES, **{**TINY_DEMUCS, "segment": Fraction(3, 2), **kw}).eval()


def _save_th(model, path):
    """As demucs.states.serialize_model + save_with_checksum write it (no omegaconf here)."""
    from demucs.states import get_state

    args, kwargs = model._init_args_kwargs
    pkg = {"klass": type(model), "args": args, "kwargs": kwargs,
           "state": get_state(model, None, half=True), "training_args": {"epochs": 1}}  # fmt: skip
    torch.save(pkg, path)
    return path


def _save_safetensors(model, path):
    """As demucs' tools/export_hf.py writes it: tensors + klass/args/kwargs JSON metadata."""
    from safetensors.torch import save_file

    args, kwargs = model._init_args_kwargs

    def enc(v):
        if isinstance(v, Fraction):
            return {"_type": "fraction", "numerator": v.numerator, "denominator": v.denominator}
        return v

    meta = {"klass": "demucs.htdemucs.HTDemucs", "args": json.dumps(list(args)),
            "kwargs": json.dumps({k: enc(v) for k, v in kwargs.items()})}  # fmt: skip
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), meta)
    return path


def _half(model):
    """The .th state is stored in float16: the reference runs on those rounded weights."""
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return model


def _close(got, want):
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


@needs_peer
@pytest.mark.peers
@pytest.mark.parametrize("nfft", [4096, 1024])
def test_th_and_safetensors_equal_apply_model(nfft, tmp_path):
    """nfft 1024: the weights of the waveform transformer layer demucs never uses are dropped."""
    from demucs.apply import apply_model

    peer = _peer(0, nfft=nfft)
    th = _save_th(peer, tmp_path / "0123abcd-deadbeef.th")
    st = _save_safetensors(peer, tmp_path / "0123abcd.safetensors")
    x = torch.randn(2, 2, 9000)  # shorter than the 1.5 s segment: padded as apply_model pads
    with torch.no_grad():
        want_st = apply_model(peer, x, split=False, shifts=0)
        want_th = apply_model(_half(peer), x, split=False, shifts=0)
        ours_th, ours_st = zoo.load(th), zoo.load(st)  # the formats are recognised
        _close(ours_th(x), want_th)
        _close(ours_st(x), want_st)
    assert ours_th.backbone.segment_samples == 12000 and ours_th.sources == SOURCES


@needs_peer
@pytest.mark.peers
@pytest.mark.parametrize(
    "weights", [None, [[1, 0, 0, 0], [0, 1, 1, 1]], [[1, 1, 0.5, 1], [1, 1, 2, 0]]]
)
def test_bags_equal_apply_model(weights, tmp_path):
    """A bag YAML with its members beside it (htdemucs_ft's shape: one-hot weights per stem,
    and general weights), from .th and .safetensors members."""
    import yaml
    from demucs.apply import BagOfModels, apply_model

    members = [_half(_peer(1)), _half(_peer(2))]
    _save_th(members[0], tmp_path / "aaaa1111-12345678.th")
    _save_safetensors(members[1], tmp_path / "bbbb2222.safetensors")
    bag = {"models": ["aaaa1111", "bbbb2222"]} | ({"weights": weights} if weights else {})
    (tmp_path / "mybag.yaml").write_text(yaml.safe_dump(bag))
    ref = BagOfModels(members, weights)
    x = torch.randn(1, 2, 10000)
    with torch.no_grad():
        want = apply_model(ref, x, split=False, shifts=0)
        ours = zoo.load(tmp_path)  # the folder: its one bag YAML
        _close(ours(x), want)
    assert ours.backbone.architecture == "HTDemucs (bag of 2)"


@needs_peer
@pytest.mark.peers
def test_options_not_built_and_foreign_pickles_are_refused(tmp_path):
    from demucs.hdemucs import HDemucs

    with pytest.raises(ConversionError, match="wiener_iters=1 is an HTDemucs option"):
        from_demucs(_save_th(_peer(0, wiener_iters=1, end_iters=1, cac=False), tmp_path / "w.th"))
    with pytest.raises(ConversionError, match="t_sparse_self_attn=True is an HTDemucs option"):
        from_demucs(_save_th(_peer(0, t_sparse_self_attn=True), tmp_path / "s.th"))
    torch.manual_seed(0)
    with pytest.raises(ConversionError, match="a HDemucs model: the zoo builds only HTDemucs"):
        from_demucs(_save_th(HDemucs(SOURCES, channels=8, depth=2), tmp_path / "h.th"))
    evil = {"klass": torch.nn.Linear, "args": [], "kwargs": {}, "state": {}}
    torch.save(evil, tmp_path / "evil.th")  # any other global: refused, nothing imported
    with pytest.raises(ConversionError, match="evil.th: refused"):
        from_demucs(tmp_path / "evil.th")
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "b.yaml").write_text("models: [cafe0000]\n")
    with pytest.raises(ConversionError, match="neither cafe0000.safetensors nor"):
        zoo.load(tmp_path / "bag")


def test_registry_entries_pin_demucs_hash_prefixes():
    from zoo.hub import registry

    entries = registry.list_models()
    assert entries["htdemucs"]["format"] == entries["htdemucs_ft"]["format"] == "demucs"
    ft = entries["htdemucs_ft"]["files"]
    assert entries["htdemucs_ft"]["weights"] == "htdemucs_ft.yaml" and len(ft) == 5
    for name, spec in ft.items():  # <sig>-<8 hex of the sha256>.th, as demucs names them
        if name.endswith(".th"):
            assert spec["sha256_prefix"] == name.split("-")[1][:8]


def test_a_registry_bag_downloads_checks_and_loads(tmp_path, monkeypatch):
    """htdemucs_ft's shape, served from local files without demucs installed: a bag YAML and its
    member in the safetensors form (JSON metadata), each pinned by its sha256, loaded as zoo.load
    does for a registry name."""
    import hashlib

    import yaml
    from safetensors.torch import save_file

    from zoo.hub import registry

    torch.manual_seed(0)
    args = dict(sources=SOURCES, sample_rate=8000, segment=1.0, n_fft=4096, **TINY)
    model = HTDemucs(**args).eval()
    src = tmp_path / "published"
    src.mkdir()
    demucs_kwargs = {"sources": SOURCES, "samplerate": 8000, "segment": 1.0, "nfft": 4096,
                     **TINY}  # fmt: skip
    state = {k.removeprefix("models.0."): v.contiguous() for k, v in model.state_dict().items()}
    meta = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(demucs_kwargs)}
    save_file(state, str(src / "cafe0001.safetensors"), meta)
    (src / "bag.yaml").write_text(yaml.safe_dump({"models": ["cafe0001"]}))
    files = {
        f: {"url": (src / f).as_uri(), "sha256": hashlib.sha256((src / f).read_bytes()).hexdigest()}
        for f in ("bag.yaml", "cafe0001.safetensors")
    }
    entry = {"format": "demucs", "description": "test", "weights": "bag.yaml", "files": files}
    monkeypatch.setitem(registry.REGISTRY, "tiny-htdemucs", entry)
    monkeypatch.setenv("ZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    sep = zoo.load("tiny-htdemucs", download=True)
    x = torch.randn(1, 2, 5000)
    with torch.no_grad():
        assert torch.equal(sep(x), model(x))
