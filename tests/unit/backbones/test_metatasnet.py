"""Meta-TasNet: shapes, gradients, the parameter count derived from its layer list, stages."""

import pytest
import torch

from zoo.backbones import MetaTasNet
from zoo.dsp import resample_differentiable as resample

SMALL = dict(n_filters=32, bn_chan=16, hid_chan=16, n_layers=2, n_stacks=1, mels=16)


def derived_count(s=4, base=8000, stages=3, n=440, k=20, b=160, h=160, layers=6, stacks=3,
                  ck=3, filters=3, mels=256, e1=8, e2=5):  # fmt: skip
    """Parameters from the layer list of the authors' code (pfnet-research/meta-tasnet), less
    the last block's residual convolution per stage, which the authors compute and discard."""

    def gconv(c_in, c_out, kernel=1, groups=1):  # P (e1 -> e2) and W (e2 -> kernel)
        w = c_out * (c_in // groups) * kernel
        return e1 * e2 + e2 + e2 * w + w

    def gnorm(c):
        return e1 * e2 + e2 + e2 * 2 * c + 2 * c

    total = 0
    for i in range(stages):
        m = 2**i
        nn_, kk, sr = n * m, k * m, base * m
        bins = 1024 * (sr // 8000) // 2 + 1
        enc = sum((nn_ // 4) * kk * 2**j for j in range(filters)) + 2 * bins
        enc += bins * mels + mels + (filters * (nn_ // 4) + mels) * nn_ + nn_ * nn_
        widths = [nn_ // 2 ** (j + 1) for j in range(filters)]
        dec = nn_ * sum(widths) + sum(w * kk * 2**j for j, w in enumerate(widths))
        n_in = nn_ + nn_ // 2 if i else nn_
        mask = 1 + gnorm(n_in) + gconv(n_in, b) + 1 + gnorm(b)
        block = gconv(b, h) + 1 + gnorm(h) + gconv(h, h, ck, h) + 1 + gnorm(h) + 2 * gconv(h, b)
        mask += layers * stacks * block + 1 + gnorm(b) + gconv(b, nn_) + 1 + gnorm(nn_)
        mask -= gconv(h, b)  # the last block's residual output feeds nothing: not built
        total += enc + dec + mask + s * e1
    return total


def test_parameter_count_matches_the_layer_list():
    assert sum(p.numel() for p in MetaTasNet().parameters()) == derived_count() == 45_070_325
    small = MetaTasNet(**SMALL)
    want = derived_count(n=32, b=16, h=16, layers=2, stacks=1, mels=16)
    assert sum(p.numel() for p in small.parameters()) == want


def test_shapes_stages_and_gradients():
    model = MetaTasNet(**SMALL)
    assert model.sample_rate == 32000 and [s.sample_rate for s in model.stages] == [
        8000,
        16000,
        32000,
    ]
    x = torch.randn(2, 2, 16001)  # any length: padded to the strides, cut back
    est = model(x)
    assert est.shape == (2, 4, 2, 16001)
    frames = [latent.shape[-1] for _, _, latent in model._cache["stages"]]
    assert len(set(frames)) == 1  # the stride doubles with the rate: same frames per stage
    aux = model.auxiliary_loss(torch.randn(2, 4, 2, 16001))
    (est.square().mean() + aux).backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    # the authors' code computes the last TCN block's residual output and discards it: not built
    assert unused == set() and model.stages[0].mask.blocks[-1].res is None
    model.eval()
    with pytest.raises(RuntimeError, match="forward pass in training mode"):
        with torch.no_grad():
            model(x)
        model.auxiliary_loss(torch.randn(2, 4, 2, 16001))


def test_a_batch_of_one_trains():
    # found by `make rehearse` (the paper recipe at batch 1): the auxiliary loss's references
    # reach the resampler as a strided view, which torchaudio's resample refused
    model = MetaTasNet(**SMALL)
    x = torch.randn(1, 2, 16000)
    est = model(x)
    (est.square().mean() + model.auxiliary_loss(torch.randn(1, 4, 2, 16000))).backward()
    assert all(p.grad is not None for p in model.parameters())
    view = torch.randn(1, 3, 800, 2)[..., 0]  # a strided view
    assert not view.is_contiguous()
    torch.testing.assert_close(resample(view, 8000, 16000), resample(view.clone(), 8000, 16000))


def test_generated_and_independent_masking_parameters():
    gen = MetaTasNet(**SMALL)
    ind = MetaTasNet(**SMALL, generated=False)
    names = {n for n, _ in gen.named_parameters()}
    assert any(".project." in n for n in names) and "stages.0.embedding.weight" in names
    assert not any(".project." in n for n, _ in ind.named_parameters())
    assert ind(torch.randn(1, 1, 8000)).shape == (1, 4, 1, 8000)
    with pytest.raises(ValueError, match="multiples of 8"):
        MetaTasNet(n_filters=30)


def test_outputs_are_rescaled_to_the_mixture_by_least_squares():
    torch.manual_seed(0)
    model = MetaTasNet(**SMALL).eval()
    mix = torch.randn(2, 2, 8000)
    with torch.no_grad():
        est = model(mix)
        raw = MetaTasNet(**SMALL, rescale_to_mixture=False).eval()
        raw.load_state_dict(model.state_dict())
        unscaled = raw(mix)
    total = est.sum(1)  # (B, C, T): the least-squares residual is orthogonal to the fit
    torch.testing.assert_close(
        (total * (mix - total)).sum(-1), torch.zeros(2, 2), atol=1e-3, rtol=0
    )
    ratio = est / unscaled  # one gain per item and channel, shared by the sources
    assert torch.allclose(ratio, ratio[:, :1, :, :1].expand_as(ratio), rtol=1e-3, atol=1e-3)


def test_input_stats_standardise_each_stage_log_spectrogram():
    torch.manual_seed(0)
    model = MetaTasNet(**SMALL, n_stages=2)
    batches = [torch.randn(2, 2, 8192) * (1 + i) for i in range(2)]
    keys = model.fit_input_stats(iter(batches))
    assert keys == [f"stages.{i}.encoder.spec_{k}" for i in (0, 1) for k in ("mean", "std")]
    for stage in model.stages:
        enc = stage.encoder
        logp = torch.cat(
            [
                enc.log_power(resample(b.reshape(-1, 1, 8192), 16000, stage.sample_rate))
                for b in batches
            ]
        )  # (items, bins, frames)
        z = ((logp - enc.spec_mean) / enc.spec_std).transpose(0, 1).reshape(logp.shape[1], -1)
        torch.testing.assert_close(z.mean(1), torch.zeros(z.shape[0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.std(1), torch.ones(z.shape[0]), atol=1e-4, rtol=0)
    assert "stages.0.encoder.spec_mean" in model.state_dict()  # exported with the weights


def test_checkpointed_blocks_give_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = MetaTasNet(**SMALL).train()
    ckpt = MetaTasNet(**SMALL, checkpoint_blocks=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 3200)
    ref = torch.randn(1, 4, 1, 3200)
    grads = []
    for model in (plain, ckpt):
        est = model(x)
        loss = (est - ref).square().mean() + model.auxiliary_loss(ref)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(plain(x), ckpt(x))
    assert grads[0].keys() == grads[1].keys() and all(v is not None for v in grads[1].values())
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], msg=n)
