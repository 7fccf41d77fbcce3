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


def test_chunked_oracle_masks_each_clip_on_its_own():
    from zoo.backbones import OracleMask

    torch.manual_seed(0)
    sources = torch.randn(1, 2, 1, 5000)
    mix = sources.sum(1)
    oracle = OracleMask("wiener", 8000, 2, n_fft=128, hop=32, chunk_seconds=0.25)  # 2000 samples
    est = oracle(mix, sources)
    for a in (0, 2000, 4000):
        piece = torch.nn.functional.pad(mix[..., a : a + 2000], (0, max(0, a + 2000 - 5000)))
        src = torch.nn.functional.pad(sources[..., a : a + 2000], (0, max(0, a + 2000 - 5000)))
        want = oracle_estimates(piece, src, "wiener", 128, 32)[..., : min(2000, 5000 - a)]
        torch.testing.assert_close(est[..., a : a + 2000], want)
    assert oracle.architecture == "oracle WIENER, 0.25 s clips"
    assert not torch.allclose(est, oracle_estimates(mix, sources, "wiener", 128, 32), atol=1e-3)
    with pytest.raises(ValueError, match="shorter than n_fft"):
        OracleMask("ibm", 8000, 2, n_fft=256, chunk_seconds=0.01)
