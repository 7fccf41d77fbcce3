"""Streaming separation: a causal Conv-TasNet / TDCN++ pushed block by block gives the offline
model's output, for any block size; what cannot stream is refused in words."""

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from zoo.backbones import ConvTasNet
from zoo.cli import main
from zoo.hub import registry
from zoo.streaming import StreamError

CAUSAL = dict(causal=True, norm="cLN")
RATE = 8000


def _streamed(model, x, block):
    s = zoo.stream(model)
    outs = [s.push(x[:, i : i + block]) for i in range(0, x.shape[-1], block)]
    return torch.cat([*outs, s.flush()], -1), outs


@pytest.mark.parametrize(
    "kind",
    [
        dict(),
        # TDCN++'s changes (repeat skips, block scales, mixture consistency), an odd basis length
        dict(
            n_src=3,
            kernel_size=15,
            mask_act="sigmoid",
            repeat_skips=True,
            block_scales=True,
            mixture_consistency=True,
        ),
    ],
    ids=["convtasnet", "tdcnpp"],
)
def test_streamed_output_equals_the_offline_causal_model_for_any_block_size(tiny_convtasnet, kind):
    net = tiny_convtasnet(**CAUSAL, **kind).eval()
    x = torch.randn(2, RATE // 2 + 13)  # stereo, a length that fills no whole number of frames
    with torch.no_grad():
        ref = net(x[None])[0]
    hop = net.stride
    # one hop, 10 ms, 100 ms, a size that is no multiple of the hop, and one sample at a time
    # (on the first 600 samples: a push per sample is slow in Python)
    for block in (hop, RATE // 100, RATE // 10, 3 * hop + 5, 1):
        if block == 1:
            x = x[:, :600]
            with torch.no_grad():
                ref = net(x[None])[0]
        y, outs = _streamed(net, x, block)
        assert y.shape == ref.shape
        assert (y - ref).abs().max() < 1e-5, block
        # nothing is held back longer than the algorithmic latency (one basis window) plus the
        # block: after each push, all but the last window's samples are out
        got = np.cumsum([o.shape[-1] for o in outs])
        pushed = np.minimum(np.arange(1, len(outs) + 1) * block, x.shape[-1])
        assert (pushed - got <= net.kernel_size).all(), block


def test_a_causal_output_does_not_change_when_later_input_does(tiny_convtasnet):
    net = tiny_convtasnet(**CAUSAL).eval()
    x = torch.randn(1, 1, 4000)
    t = 2000
    later = x.clone()
    later[..., t:] = torch.randn(1, 1, 4000 - t)
    with torch.no_grad():
        a, b = net(x), net(later)
    # the frames that end before t do not read the changed samples: equal outputs up to the
    # first frame that does, and a different output after it
    first = (t - net.kernel_size) // net.stride * net.stride + net.stride
    assert torch.equal(a[..., :first], b[..., :first])
    assert not torch.allclose(a[..., t:], b[..., t:])
    noncausal = tiny_convtasnet().eval()
    with torch.no_grad():
        assert not torch.allclose(noncausal(x)[..., :first], noncausal(later)[..., :first])


def test_the_stream_starts_afresh_after_flush(tiny_convtasnet):
    net = tiny_convtasnet(**CAUSAL).eval()
    x = torch.randn(1, 3000)
    s = zoo.stream(net)
    first = torch.cat([s.push(x), s.flush()], -1)
    second = torch.cat([s.push(x[:, :1000]), s.push(x[:, 1000:]), s.flush()], -1)
    assert first.shape == second.shape and (first - second).abs().max() < 1e-6


def test_the_tiny_registry_entry_streams_with_its_latency(tmp_path):
    s = zoo.stream("convtasnet-causal-tiny-random", download=True)
    assert s.latency == 16 and s.latency_ms == 2.0 and s.sources == ["s1", "s2"]
    ref_net = zoo.load("convtasnet-causal-tiny-random").backbone
    x = torch.randn(1, 800)
    with torch.no_grad():
        ref = ref_net(x[None])[0]
    y = torch.cat([s.push(x[:, :333]), s.push(x[:, 333:]), s.flush()], -1)
    assert (y - ref).abs().max() < 1e-5


def test_what_cannot_stream_is_refused_in_one_line(tiny_convtasnet):
    with pytest.raises(StreamError, match=r"not causal \(causal: false\).*libri2mix_pit_causal"):
        zoo.stream(tiny_convtasnet())
    with pytest.raises(ValueError, match=r"causal=True needs a per-frame norm.*norm='cLN'"):
        tiny_convtasnet(causal=True)  # gLN: statistics over the whole input
    with pytest.raises(ValueError, match=r"causal=True needs framing='asteroid'"):
        tiny_convtasnet(**CAUSAL, framing="torchaudio")
    s = zoo.stream(tiny_convtasnet(**CAUSAL).eval())
    s.push(torch.randn(2, 100))
    with pytest.raises(StreamError, match=r"the stream has 2 channel\(s\), this block has 1"):
        s.push(torch.randn(1, 100))
    with pytest.raises(StreamError, match=r"samples >= 1"):
        s.push(torch.randn(2, 0))
    with pytest.raises(StreamError, match=r"float samples"):
        s.push(torch.ones(2, 10, dtype=torch.int16))


def _causal_model(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(registry._source_url("package:tiny/convtasnet-causal-tiny-random")[7:], folder)
    return str(folder)


def test_zoo_separate_stream_writes_the_offline_output(tmp_path, capsys):
    model = _causal_model(tmp_path)
    wav = (torch.randn(16000 + 7, 2) * 0.1).numpy()  # 16 kHz stereo into the 8 kHz model
    sf.write(tmp_path / "in.wav", wav, 16000, subtype="FLOAT")
    common = [str(tmp_path / "in.wav"), "--chunk", "0"]
    assert main(["separate", model, *common, "-o", str(tmp_path / "off")]) == 0
    args = ["separate", model, *common, "-o", str(tmp_path / "st"), "--stream"]
    assert main([*args, "--block-seconds", "0.0123"]) == 0
    for s in ("s1", "s2"):
        off, sr = sf.read(tmp_path / "off" / f"in_{s}.wav")
        st, sr2 = sf.read(tmp_path / "st" / f"in_{s}.wav")
        assert sr == sr2 == 16000 and st.shape == off.shape == wav.shape
        assert np.abs(st - off).max() < 1e-5
    # a model that is not causal is refused before anything is written
    other = tmp_path / "noncausal"
    shutil.copytree(registry._source_url("package:tiny/convtasnet-tiny-random")[7:], other)
    capsys.readouterr()
    assert main(["separate", str(other), *common, "-o", str(tmp_path / "x"), "--stream"]) == 2
    assert "not causal" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_causal_recipe_builds_a_streamable_model():
    from zoo.run.recipe import load_recipe

    args = load_recipe("libri2mix_pit_causal").merged(mini=True)["model"]["backbone"]
    net = ConvTasNet(**args["init_args"])
    assert net.causal and zoo.stream(net).latency == args["init_args"]["kernel_size"]


def _umx(**kw):
    from zoo.backbones import OpenUnmix

    args = dict(sources=["a", "b"], sample_rate=RATE, n_fft=256, hop=64, nb_channels=2,
                hidden_size=16, nb_layers=2, unidirectional=True, niter=0,
                bandwidth=None)  # fmt: skip
    return OpenUnmix(**{**args, **kw}).eval()


@pytest.mark.parametrize(
    "kind", [dict(), dict(softmask=True, residual=True)], ids=["plain", "soft"]
)
def test_unidirectional_open_unmix_streams_as_it_separates_offline(kind):
    net = _umx(**kind)
    x = torch.randn(2, RATE // 2 + 11)
    with torch.no_grad():
        ref = net(x[None])[0]
    for block in (net.hop, RATE // 100, RATE // 10, 3 * net.hop + 5):
        y, _ = _streamed(net, x, block)
        assert y.shape == ref.shape == (net.n_src, 2, x.shape[-1])
        assert (y - ref).abs().max() < 1e-5 * ref.abs().max(), block
    assert zoo.stream(net).latency == net.n_fft


def test_open_unmix_that_reads_the_future_is_refused():
    with pytest.raises(StreamError, match=r"a bidirectional LSTM\): stream one with unidir"):
        zoo.stream(_umx(unidirectional=False))
    with pytest.raises(StreamError, match=r"a Wiener EM over frames, niter 1"):
        zoo.stream(_umx(niter=1))
    with pytest.raises(StreamError, match=r"takes 2 channel\(s\), the first block has 1"):
        zoo.stream(_umx()).push(torch.randn(1, 300))


def test_a_failed_streamed_file_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    model = _causal_model(tmp_path)
    good = np.random.default_rng(0).standard_normal((4000, 1)).astype(np.float32) * 0.1
    sf.write(tmp_path / "in.wav", good, RATE, subtype="FLOAT")
    bad = good.copy()
    bad[3000] = np.nan  # after the first blocks were written
    sf.write(tmp_path / "nan.wav", bad, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["separate", model, str(tmp_path / "nan.wav"), "-o", str(out), "--stream"]) == 2
    assert "nan.wav: contains NaN or Inf samples" in capsys.readouterr().err
    assert list(out.iterdir()) == []

    class FullDisk(sf.SoundFile):
        def write(self, data):
            raise RuntimeError("Error writing: No space left on device")

    monkeypatch.setattr(sf, "SoundFile", FullDisk)
    assert main(["separate", model, str(tmp_path / "in.wav"), "-o", str(out), "--stream"]) == 2
    assert list(out.iterdir()) == []  # neither the outputs nor their partial files
