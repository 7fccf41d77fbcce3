"""AudioSlots: shapes, gradients, derived parameter count, permutation equivariance of slots."""

import pytest
import torch

from zoo.backbones import AudioSlots
from zoo.backbones.audioslots import fourier_features
from zoo.backbones.capabilities import NeedsSources
from zoo.losses import HungarianLoss, PairwiseSpectralMSE

SMALL = dict(
    n_slots=3,
    sample_rate=8000,
    n_fft=128,
    hop=32,
    chunk_seconds=0.25,
    channels=(8, 16),
    dim=16,
    heads=2,
    n_layers=2,
    decoder_hidden=16,
    decoder_layers=3,
    n_fourier=3,
)


def derived_count(
    k, channels, dim, n_layers, hidden, dec_layers, n_fourier, token_norm=True, detr=True
):
    """Parameters from the layer list (no figure is published): see the module docstring."""
    p = 4 * n_fourier + 2
    n = channels[0] * 9 + channels[0]  # stem conv
    prev = channels[0]
    for c in channels:  # residual blocks: two 3x3 convs, two group norms, 1x1 shortcut
        n += prev * c * 9 + 2 * c + c * c * 9 + 2 * c + prev * c
        prev = c
    n += prev * dim + dim + p * dim + dim  # token projection, token positions
    n += 2 * dim if token_norm else 0  # the tokens' layer norm
    n += k * dim  # slot queries
    attn = 3 * dim * dim + 3 * dim + dim * dim + dim
    n += n_layers * (2 * attn + dim * 4 * dim + 4 * dim + 4 * dim * dim + dim + 3 * 2 * dim)
    n -= (attn + 2 * 2 * dim) if detr else 0  # DETR's first layer: slots from 0, no self-attn
    n += 2 * dim  # final layer norm
    n += dim * hidden + hidden + p * hidden  # broadcast: slot and position projections
    n += (dec_layers - 2) * (hidden * hidden + hidden) + hidden + 1
    return n


def test_parameter_count_matches_the_layer_list():
    model = AudioSlots()  # the paper's n = 2 slots for two speakers, token layer norm
    got = sum(p.numel() for p in model.parameters())
    assert got == derived_count(2, (64, 128, 256), 256, 4, 256, 3, 8) == 5_393_537
    four = AudioSlots(n_slots=4, token_norm=False, queries="initial")  # the earlier reading
    got = sum(p.numel() for p in four.parameters())
    assert got == derived_count(4, (64, 128, 256), 256, 4, 256, 3, 8, False, False) == 5_657_729


def test_encoder_grid_and_shapes_and_gradients():
    model = AudioSlots()  # paper STFT: 0.5 s at 16 kHz -> 257 x 65 -> encoder grid 33 x 9
    grid = model.encoder(model.stem(torch.rand(1, 1, 257, 65)))
    assert grid.shape[-2:] == (33, 9)
    small = AudioSlots(**SMALL)
    x = torch.randn(2, 1, 2000)
    est = small(x)
    assert est.shape == (2, 3, 1, 2000)
    loss, info = HungarianLoss(PairwiseSpectralMSE(128, 32, 0.3), unmatched="silence")(
        est, torch.randn(2, 2, 1, 2000)
    )
    loss.backward()
    assert all(p.grad is not None for p in small.parameters())
    assert info["perm"].shape == (2, 2)
    assert fourier_features(5, 7, 3).shape == (35, 14)
    with pytest.raises(ValueError, match=r"\(batch, channels, time\), got \(2000,\)"):
        small(x[0, 0])
    with pytest.raises(ValueError, match="mask must be"):
        AudioSlots(mask="soft")


@pytest.mark.parametrize(
    "mask,queries", [("wiener", "detr"), ("ibm", "detr"), ("none", "detr"), ("wiener", "initial")]
)
def test_permuting_slots_permutes_outputs(mask, queries):
    torch.manual_seed(0)
    model = AudioSlots(**SMALL, mask=mask, queries=queries).eval()
    x = torch.randn(1, 2, 4000)  # stereo, longer than a clip: chunked, aligned, cross-faded
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        mag = torch.rand(2, 1, 65, 32)
        spec = model.slot_spectrograms(mag)
        out = model(x[..., :2000])
        model.slots.copy_(model.slots[perm])
        torch.testing.assert_close(model.slot_spectrograms(mag), spec[:, perm])
        torch.testing.assert_close(model(x[..., :2000]), out[:, perm], atol=1e-5, rtol=1e-4)
        assert model(x).shape == (1, 3, 2, 4000)


def test_wiener_masks_partition_the_mixture():
    model = AudioSlots(**SMALL).eval()
    x = torch.randn(1, 1, 2000)
    with torch.no_grad():
        torch.testing.assert_close(model(x).sum(1), x, atol=1e-4, rtol=0)


def _counting_encoder(model):
    """Record the frame count of every clip the encoder sees."""
    seen = []
    model.stem.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    return seen


def test_carried_slots_run_clip_by_clip_with_bounded_memory():
    torch.manual_seed(0)
    model = AudioSlots(**SMALL, carry=True).eval()
    seen = _counting_encoder(model)
    x = torch.randn(1, 1, 20 * 2000 + 123)  # 20 clips and a bit: the last zero-padded
    with torch.no_grad():
        out = model(x)
        clips = list(model.separate_chunks(x))
    assert out.shape == (1, 3, 1, x.shape[-1])
    # 21 clips, each alone (one clip of frames at a time, never the whole input), twice
    assert len(seen) == 2 * 21 and set(seen) == {(1, 1, 65, 63)}
    torch.testing.assert_close(torch.cat(clips, -1)[..., : x.shape[-1]], out)


def test_carried_slots_differ_from_fresh_queries_and_learn_continuity():
    torch.manual_seed(0)
    model = AudioSlots(**SMALL, carry=True)
    x = torch.randn(2, 1, 4000)  # a training segment of two clips
    est = model(x)
    est.square().mean().backward()  # the carry path is trained: the predictor gets gradients
    assert all(p.grad is not None for p in model.predictor.parameters())
    model.eval()
    with torch.no_grad():
        carried = model(x)[..., 2000:]
        fresh = model(x[..., 2000:])  # the second clip with the learned queries instead
    assert not torch.allclose(carried, fresh, atol=1e-4)
    with pytest.raises(ValueError, match="segment.*multiple of chunk_seconds"):
        model.train()(x[..., :2000])


def test_test_protocol_names_the_stitching_and_the_mask():
    assert AudioSlots(**SMALL).test_protocol["stitch"].startswith("half-overlapping")
    carry = AudioSlots(**SMALL, carry=True, mask="ibm").test_protocol
    assert carry == {
        "chunk_seconds": 0.25,
        "stitch": "slots carried from clip to clip, clips joined in slot order",
        "mask": "ibm",
    }


def test_autoencoder_encodes_each_true_source_in_order():
    from zoo.backbones import AudioSlotsAutoencoder

    kw = {k: v for k, v in SMALL.items() if k != "n_slots"}
    torch.manual_seed(0)
    ae = AudioSlotsAutoencoder(n_src=2, **kw).eval()
    mix_src = torch.randn(1, 2, 1, 5000)
    mix = mix_src.sum(1)
    with torch.no_grad():
        est = ae(mix, mix_src)
        swapped = ae(mix, mix_src.flip(1))
        torch.testing.assert_close(est.sum(1), mix, atol=1e-4, rtol=0)  # Wiener-like masks
    torch.testing.assert_close(swapped, est.flip(1), atol=1e-5, rtol=1e-4)
    assert ae.n_src == 2 and isinstance(ae, NeedsSources) and ae.test_chunk is None
    with pytest.raises(ValueError, match="true sources"):
        ae(mix)


def test_detr_queries_enter_every_layer_and_initial_queries_only_the_first():
    mag = torch.rand(1, 1, 65, 32)
    for queries in ("detr", "initial"):
        torch.manual_seed(0)
        model = AudioSlots(**SMALL, queries=queries).eval()
        seen = []  # (query, value) of every attention over the slots
        for layer in model.layers:
            for attn in (layer.self_attn, layer.cross_attn):
                if attn is not None:
                    attn.register_forward_pre_hook(
                        lambda m, a, kw, seen=seen: seen.append(a), with_kwargs=True
                    )
        with torch.no_grad():
            model.slot_spectrograms(mag)
        learned = model.slots[None]
        if queries == "detr":  # slots from 0: the first layer's queries are the learned ones,
            torch.testing.assert_close(seen[0][0], learned)  # then added at every layer
            for q, _, v in seen[1::2]:  # self-attention: query = normalised slots + queries
                torch.testing.assert_close(q - v, learned, atol=1e-6, rtol=0)
        else:  # the learned queries are the initial slots; no query is added afterwards
            for q, _, v in seen[0::2]:
                torch.testing.assert_close(q, v)
    with pytest.raises(ValueError, match="queries must be"):
        AudioSlots(**SMALL, queries="learned")
