"""Spectrogram U-Net (Jansson et al. 2017): parameter count, shapes, masks, gradients."""

import pytest
import torch

from zoo.backbones import SpectrogramUNet


def derived_count(n_src, chans=(16, 32, 64, 128, 256, 512), k=5):
    enc = sum(k * k * i * o + o + 2 * o for i, o in zip((1, *chans[:-1]), chans, strict=True))
    outs = [*reversed(chans[:-1]), n_src]
    ins = [chans[-1], *(2 * o for o in outs[:-1])]
    dec = sum(k * k * i * o + o for i, o in zip(ins, outs, strict=True))
    dec += sum(2 * o for o in outs[:-1])  # batch norm on all but the last layer
    return enc + dec


def test_parameter_count_matches_the_paper_architecture():
    assert sum(p.numel() for p in SpectrogramUNet(n_src=1).parameters()) == derived_count(1)
    assert derived_count(1) == 9_823_313


@pytest.mark.parametrize("channels", [1, 2])
def test_shapes_and_masks(channels):
    m = SpectrogramUNet(n_src=2, channels=(4, 8, 8, 8, 8, 8)).eval()
    x = torch.randn(2, channels, 8192 * 2 + 37)
    y = m(x)
    assert y.shape == (2, 2, channels, x.shape[-1])
    masks = m.masks(torch.rand(1, 1, 512, 64))
    assert masks.shape == (1, 2, 512, 64) and masks.min() >= 0 and masks.max() <= 1
    # masks in [0, 1] on the mixture STFT: each estimate has no more energy than the mixture
    assert (y.pow(2).sum(-1) <= x.pow(2).sum(-1)[:, None] * 1.01).all()


def test_gradients_reach_every_parameter():
    m = SpectrogramUNet(n_src=2, channels=(4, 8, 8, 8, 8, 8))
    m(torch.randn(2, 1, 8192)).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
