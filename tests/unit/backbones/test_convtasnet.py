"""Conv-TasNet / TDCN++: paper parameter counts, shapes, gradients, TDCN++ flags, layouts."""

import pytest
import torch

from tests.conftest import TINY_CONVTASNET as SMALL
from tests.conftest import needs_asteroid
from zoo.backbones import ConvTasNet, conv_tasnet_paper, tdcnpp_mixit
from zoo.backbones.layers.norms import FeatureLayerNorm, GlobalLayerNorm


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_conv_tasnet_paper_parameter_count():
    # Luo & Mesgarani 2019 report 5.1 M; Asteroid's layout has 5,050,545, of which the last block's
    # residual conv (512 x 128 + 128) feeds nothing and is not built here (torchaudio's layout).
    assert n_params(conv_tasnet_paper(n_src=2)) == 5_050_545 - (512 * 128 + 128) == 4_984_881
    # each extra source adds one N-channel mask: Sc*N + N parameters
    assert (
        n_params(conv_tasnet_paper(n_src=3)) - n_params(conv_tasnet_paper(n_src=2))
        == 128 * 512 + 512
    )


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n_src", [1, 2, 4])
def test_shapes_any_outputs_and_channels(n_src, channels):
    m = ConvTasNet(n_src=n_src, **SMALL)
    for t in (1600, 1603):  # lengths that are and are not a multiple of the hop
        assert m(torch.randn(2, channels, t)).shape == (2, n_src, channels, t)


def test_gradients_reach_every_parameter():
    m = ConvTasNet(n_src=3, repeat_skips=True, block_scales=True, norm="fLN", **SMALL)
    m(torch.randn(2, 1, 800)).pow(2).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []  # no dead residual conv on the last block (DDP would refuse to train)
    last = SMALL["n_blocks"] * SMALL["n_repeats"] - 1
    assert m.masker.blocks[last].res_conv is None and m.masker.blocks[0].res_conv is not None
    # without skip connections the masks come from the residual path: the last block needs it
    assert ConvTasNet(n_src=2, **{**SMALL, "skip_chan": 0}).masker.blocks[last].res_conv


def test_asteroid_layout_state_loads_strictly_without_the_dead_residual():
    m = ConvTasNet(n_src=2, **SMALL)
    last = SMALL["n_blocks"] * SMALL["n_repeats"] - 1
    state = dict(m.state_dict())
    dead = {  # what Asteroid's layout (and zoo exports before the fix) carry
        f"masker.blocks.{last}.res_conv.weight": torch.randn(
            SMALL["bn_chan"], SMALL["hid_chan"], 1
        ),
        f"masker.blocks.{last}.res_conv.bias": torch.randn(SMALL["bn_chan"]),
    }
    m.load_state_dict({**state, **dead}, strict=True)  # dropped by name, nothing else
    with pytest.raises(RuntimeError, match="Unexpected key"):
        m.load_state_dict({**state, "masker.blocks.0.extra": torch.zeros(1)}, strict=True)
    state.pop("masker.mask_conv.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        m.load_state_dict(state, strict=True)


def test_tdcnpp_flags():
    m = ConvTasNet(
        n_src=4, norm="fLN", repeat_skips=True, block_scales=True, mixture_consistency=True, **SMALL
    )
    assert torch.allclose(m.masker.block_scales, torch.tensor([1.0, 0.9, 0.81] * 2))
    assert len(m.masker.repeat_skips) == SMALL["n_repeats"] - 1
    assert isinstance(m.masker.in_norm, FeatureLayerNorm)
    mix = torch.randn(3, 1, 1000)
    torch.testing.assert_close(m(mix).sum(1), mix, atol=1e-5, rtol=0)  # mixture consistency
    assert isinstance(conv_tasnet_paper().masker.in_norm, GlobalLayerNorm)
    assert tdcnpp_mixit().n_src == 4
    assert (
        tdcnpp_mixit().architecture == "TDCN++"
        and conv_tasnet_paper().architecture == "Conv-TasNet"
    )


def test_feature_layer_norm_normalises_each_channel_over_time():
    x = torch.randn(2, 5, 300) * torch.arange(1, 6)[None, :, None] + 3
    y = FeatureLayerNorm(5)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(2, 5), atol=1e-4, rtol=0)


def test_bad_input_shape_and_sources():
    with pytest.raises(ValueError, match=r"\(batch, channels, time\).*\(100,\)"):
        ConvTasNet(**SMALL)(torch.randn(100))
    with pytest.raises(ValueError, match="sources"):
        ConvTasNet(n_src=2, sources=["a"], **SMALL)


@needs_asteroid
def test_same_layout_as_asteroid_conv_tasnet():
    from asteroid.models import ConvTasNet as AsteroidConvTasNet

    from zoo.hub.convert import ASTEROID_CONVTASNET, rename

    peer = AsteroidConvTasNet(n_src=2).eval()  # its model default is a sigmoid mask
    ours = ConvTasNet(n_src=2, mask_act="sigmoid").eval()
    theirs = rename(peer.state_dict(), ASTEROID_CONVTASNET)
    # the same layout, less the last block's residual conv (it feeds nothing)
    assert set(theirs) - set(ours.state_dict()) == {
        "masker.blocks.23.res_conv.weight",
        "masker.blocks.23.res_conv.bias",
    }
    assert all(theirs[k].shape == v.shape for k, v in ours.state_dict().items())
    ours.load_state_dict(theirs, strict=True)
    x = torch.randn(2, 1, 12000)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[:, :, 0], peer(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm,dims", [("gLN", (1, 2)), ("fLN", (2,)), ("cLN", (1,))])
def test_norms_equal_their_definition(norm, dims):
    from zoo.backbones.layers.norms import make_norm

    layer = make_norm(norm, 6)
    with torch.no_grad():
        layer.gamma.uniform_(0.5, 1.5)
        layer.beta.uniform_(-1, 1)
    x = torch.randn(3, 6, 50) * 2 + 1
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, keepdim=True, unbiased=False)
    expect = (x - mean) / torch.sqrt(var + 1e-8) * layer.gamma[:, None] + layer.beta[:, None]
    torch.testing.assert_close(layer(x), expect, atol=1e-5, rtol=1e-5)


def test_checkpointed_blocks_give_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    tiny = dict(n_filters=16, bn_chan=8, hid_chan=16, skip_chan=8, n_blocks=2, n_repeats=2)
    plain = ConvTasNet(n_src=2, **tiny)
    ckpt = ConvTasNet(n_src=2, **tiny, checkpoint_blocks=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 800)
    for model in (plain, ckpt):
        model(x).square().mean().backward()
    torch.testing.assert_close(ckpt(x), plain(x))
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=n)
    with torch.no_grad():  # inference keeps nothing to recompute: the plain path
        torch.testing.assert_close(ckpt(x), plain(x))
