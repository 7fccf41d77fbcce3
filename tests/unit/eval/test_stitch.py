"""The AudioSlots paper's oracle stitching: each clip's outputs matched to the references."""

import itertools

import torch

from zoo.eval.metrics import oracle_stitch
from zoo.inference import iter_chunks, join_chunks


def _si_sdr(est, ref, eps=1e-8):
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref + eps) * ref
    return 10 * torch.log10((target @ target + eps) / ((est - target) @ (est - target) + eps))


def test_oracle_stitch_equals_brute_force_per_clip_matching():
    torch.manual_seed(0)
    t, chunk, m = 1000, 300, 3  # 4 clips, the last one padded
    refs = torch.randn(2, 2, 1, t, dtype=torch.float64)
    clips = [torch.randn(2, m, 1, chunk, dtype=torch.float64) for _ in range(4)]
    clips[1][:, 2] = refs[:, 0, :, 300:600] + 0.1 * clips[1][:, 2]  # clip 2: output 3 is s1
    got = oracle_stitch(iter(clips), refs)
    want = torch.zeros_like(refs)
    for b in range(2):
        for k, clip in enumerate(clips):
            a, n = k * chunk, min(chunk, t - k * chunk)
            best = max(
                itertools.permutations(range(m), 2),
                key=lambda p: sum(
                    float(_si_sdr(clip[b, p[j], 0, :n], refs[b, j, 0, a : a + n])) for j in (0, 1)
                ),
            )
            for j in (0, 1):
                want[b, j, 0, a : a + n] = clip[b, best[j], 0, :n]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got[:, 0, :, 300:600], clips[1][:, 2])


def test_chunks_cut_and_join_back():
    x = torch.arange(10.0).reshape(1, 1, 10)
    pieces = list(iter_chunks(x, 4))
    assert [(s, n) for s, n, _ in pieces] == [(0, 4), (4, 4), (8, 2)]
    assert pieces[-1][2].tolist() == [[[8.0, 9.0, 0.0, 0.0]]]
    torch.testing.assert_close(join_chunks((p for _, _, p in pieces), 10), x)
