"""Open-Unmix target network: published parameter count and equality with the openunmix package."""

import pytest
import torch

from tests.conftest import has_module
from zoo.backbones.openunmix import OpenUnmixTarget, bandwidth_to_max_bin, umxhq_target


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
