"""Oracle masks: definitions on known signals, and results rows marked as references."""

import pytest
import torch

from zoo.backbones.oracle import oracle_estimates


def test_oracles_on_disjoint_spectra_recover_the_sources():
    t = torch.arange(8000) / 8000
    s1 = torch.sin(2 * torch.pi * 300 * t)  # far apart in frequency: masks are nearly ideal
    s2 = 0.5 * torch.sin(2 * torch.pi * 2500 * t)
    sources = torch.stack([s1, s2])[None, :, None]  # (1, 2, 1, T)
    mix = sources.sum(1)
    for kind in ("ibm", "irm", "wiener"):
        est = oracle_estimates(mix, sources, kind)
        err = (est - sources)[..., 500:-500].pow(2).sum() / sources[..., 500:-500].pow(2).sum()
        assert err < 1e-3, kind
    torch.testing.assert_close(
        oracle_estimates(mix, sources, "mixture"), mix[:, None].expand(-1, 2, -1, -1)
    )


def test_masks_sum_to_the_mixture_when_noise_is_a_component():
    sources, noise = torch.randn(2, 2, 1, 4000), 0.3 * torch.randn(2, 1, 4000)
    mix = sources.sum(1) + noise
    for kind in ("ibm", "irm", "wiener"):
        est = oracle_estimates(mix, sources, kind, residual=False)
        assert est.shape == sources.shape
    # with the noise in the denominator the masks of the sources sum to less than one
    est = oracle_estimates(mix, sources, "wiener")
    assert est.sum(1).pow(2).sum() < mix.pow(2).sum()
    with pytest.raises(ValueError, match="unknown oracle"):
        oracle_estimates(mix, sources, "magic")
