"""Ground-floor DSP: resampling (one-shot and block-wise) and the STFT helper."""

import pytest
import torch


def test_blockwise_resampling_equals_one_shot():
    import math

    from zoo.dsp import resample, resample_blocks

    for orig, new, t in ((44100, 8000, 44100 * 3 + 13), (8000, 44100, 8000 * 4 + 5)):
        x = torch.randn(2, t)
        parts = torch.cat(list(resample_blocks(x, orig, new, block_seconds=1.0)), -1)
        assert parts.shape[0] == 2 and abs(parts.shape[1] - t * new / orig) <= 1
        torch.testing.assert_close(parts, resample(x, orig, new), atol=0, rtol=0)
    # a 440 Hz tone stays a 440 Hz tone of the same amplitude (away from the edges)
    n = torch.arange(44100) / 44100
    y = resample(torch.sin(2 * math.pi * 440 * n)[None], 44100, 8192)[0]
    want = torch.sin(2 * math.pi * 440 * torch.arange(y.shape[-1]) / 8192)
    assert (y - want)[500:-500].abs().max() < 1e-3


@pytest.mark.parametrize(
    "n_fft,hop,length", [(256, 64, 4001), (1024, 768, 20000), (512, 125, 8000)]
)
def test_real_stft_equals_torch_stft_and_istft(n_fft, hop, length):
    from zoo.dsp import RealSTFT

    torch.manual_seed(0)
    window = torch.hann_window(n_fft)
    real = RealSTFT(n_fft, hop, window)
    x = torch.randn(3, length)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    re, im = real.stft(x)
    assert re.shape == im.shape == spec.shape
    # direct summation in float32: within 1e-5 of the spectrum's peak (torch's FFT: ~1e-7)
    err = torch.maximum((re - spec.real).abs(), (im - spec.imag).abs()).max()
    assert err <= 1e-5 * spec.abs().max()
    want = torch.istft(spec, n_fft, hop, window=window, length=length)
    assert (real.istft(spec.real, spec.imag, length) - want).abs().max() <= 1e-5
