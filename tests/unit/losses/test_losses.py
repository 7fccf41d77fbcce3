"""Losses: known permutations and mixing matrices, equality with the peers, bad input."""

import itertools

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import FIXTURES, needs_asteroid
from zoo.losses import (
    HungarianLoss,
    MixITLoss,
    NegSISDR,
    PairwiseMSE,
    PITLoss,
    SemiSupervisedLoss,
    ThresholdedSNR,
    best_matching,
)
from zoo.losses.mixit import all_assignments

REFS = load_file(str(FIXTURES / "peer_refs.safetensors"))
DB_TOL = 1e-4


# -- PIT -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_pit_recovers_known_permutation_with_near_zero_loss(n):
    ref = torch.randn(4, n, 800)
    perm = torch.stack([torch.randperm(n) for _ in range(4)])  # est[b, i] = ref[b, perm[b, i]]
    est = torch.stack([ref[b, perm[b]] for b in range(4)])
    loss, info = PITLoss(NegSISDR())(est, ref)
    # info["perm"][b, j] is the estimate matched to reference j: the inverse permutation.
    assert torch.equal(info["perm"], torch.argsort(perm, dim=1))
    assert loss < -70  # perfect reconstruction: SI-SDR limited only by eps
    loss_mse, info_mse = PITLoss(PairwiseMSE())(est, ref)
    assert torch.equal(info_mse["perm"], info["perm"])
    assert abs(float(loss_mse)) < 1e-6


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("name,signal_loss", [("sisdr", NegSISDR()), ("mse", PairwiseMSE())])
def test_pit_equals_asteroid_stored(n, name, signal_loss):
    key = f"pit_{name}_n{n}"
    est = REFS[f"{key}_est"].clone().requires_grad_()
    loss, info = PITLoss(signal_loss)(est, REFS[f"{key}_ref"])
    loss.backward()
    assert torch.equal(info["perm"], REFS[f"{key}_perm"])
    assert abs(loss.item() - REFS[f"{key}_loss"].item()) < DB_TOL
    torch.testing.assert_close(est.grad, REFS[f"{key}_grad"], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_pit_equals_torchmetrics_stored(n):
    key = f"pit_sisdr_n{n}"
    _, info = PITLoss(NegSISDR())(REFS[f"{key}_est"], REFS[f"{key}_ref"])
    assert torch.equal(info["perm"], REFS[f"tm_pit_n{n}_perm"])
    # torchmetrics returns the best mean SI-SDR per item: the negative of our per-item loss.
    torch.testing.assert_close(-info["per_item"], REFS[f"tm_pit_n{n}_metric"], atol=DB_TOL, rtol=0)


def test_pit_against_torchmetrics_live():
    from torchmetrics.functional.audio import (
        permutation_invariant_training,
        scale_invariant_signal_distortion_ratio,
    )

    # Correlated signals (SI-SDR around 0 dB): at -40 dB torchmetrics' own float32 rounding alone
    # exceeds 1e-4 dB.
    ref = torch.randn(5, 3, 1000)
    est = ref[:, [2, 0, 1]] + torch.randn(5, 3, 1000)
    metric, perm = permutation_invariant_training(
        est,
        ref,
        lambda p, r: scale_invariant_signal_distortion_ratio(p, r, zero_mean=True),
        mode="speaker-wise",
        eval_func="max",
    )
    _, info = PITLoss(NegSISDR())(est, ref)
    assert torch.equal(info["perm"], perm)
    torch.testing.assert_close(-info["per_item"], metric, atol=DB_TOL, rtol=0)


def test_exhaustive_and_hungarian_agree():
    pw = torch.randn(16, 5, 5)
    a = best_matching(pw, "exhaustive")
    b = best_matching(pw, "hungarian")
    cost = lambda p: torch.gather(pw, 1, p[:, None]).sum()  # noqa: E731
    assert torch.allclose(cost(a), cost(b))
    assert torch.equal(a, b)  # random costs: the optimum is unique


def test_pit_large_n_uses_hungarian_and_is_optimal():
    n = 8  # 40320 permutations: Hungarian
    ref = torch.randn(2, n, 300)
    perm = torch.randperm(n)
    _, info = PITLoss()(ref[:, perm] + 0.01 * torch.randn(2, n, 300), ref)
    assert torch.equal(info["perm"][0], torch.argsort(perm))


# -- MixIT -----------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [3, 4, 5])
def test_mixit_equals_asteroid_stored(m):
    key = f"mixit_m{m}"
    est = REFS[f"{key}_est"].clone().requires_grad_()
    loss, info = MixITLoss(ThresholdedSNR(snr_max=30))(est, REFS[f"{key}_mix"])
    loss.backward()
    assert abs(loss.item() - REFS[f"{key}_loss"].item()) < DB_TOL
    torch.testing.assert_close(info["mixing"] @ REFS[f"{key}_est"], REFS[f"{key}_remixed"])
    torch.testing.assert_close(est.grad, REFS[f"{key}_grad"], atol=1e-6, rtol=1e-4)


def test_mixit_recovers_known_mixing_matrix():
    b, m, t = 6, 6, 500
    est = torch.randn(b, m, t)
    mixing = torch.zeros(b, 2, m)
    for i in range(b):
        assign = torch.randint(0, 2, (m,))
        mixing[i, assign, torch.arange(m)] = 1.0
    mixtures = mixing @ est  # (B, 2, T): the true remixes
    loss, info = MixITLoss(ThresholdedSNR())(est, mixtures)
    assert torch.equal(info["mixing"], mixing)
    # error 0: the loss is 10 log10(tau ||x||^2), i.e. -30 dB + 10 log10 ||x||^2
    expected = (10 * torch.log10(1e-3 * (mixtures.double() ** 2).sum(-1) + 1e-8)).mean()
    assert abs(float(loss) - float(expected)) < 1e-3


def _brute_force_mixit(signal_loss, est, mixtures):
    n_mix, m = mixtures.shape[1], est.shape[1]
    best = None
    for assign in itertools.product(range(n_mix), repeat=m):
        a = torch.nn.functional.one_hot(torch.tensor(assign), n_mix).T.float()  # (n_mix, M)
        remix = a @ est  # (B, n_mix, T)
        per_mix = torch.stack(
            [
                torch.diagonal(
                    signal_loss(remix[:, j : j + 1], mixtures[:, j : j + 1]), dim1=1, dim2=2
                )[:, 0]
                for j in range(n_mix)
            ],
            -1,
        )
        val = per_mix.mean(-1)
        best = val if best is None else torch.minimum(best, val)
    return best


@pytest.mark.parametrize("n_mix,m", [(2, 7), (3, 4)])
@pytest.mark.parametrize("signal_loss", [ThresholdedSNR(), NegSISDR(), PairwiseMSE()])
def test_mixit_matches_brute_force(n_mix, m, signal_loss):
    est, mixtures = torch.randn(3, m, 200), torch.randn(3, n_mix, 200)
    _, info = MixITLoss(signal_loss)(est, mixtures)
    torch.testing.assert_close(
        info["per_item"], _brute_force_mixit(signal_loss, est, mixtures), atol=1e-4, rtol=0
    )


def test_all_assignments_order():
    a = all_assignments(3, 2)
    assert a.shape == (8, 3)
    assert a[1].tolist() == [0, 0, 1] and a[6].tolist() == [1, 1, 0]


@needs_asteroid
@pytest.mark.parametrize("m", [4, 8])
def test_mixit_against_asteroid_live(m):
    from asteroid.losses import MixITLossWrapper

    tau = 1e-3

    def f(e, x):
        return (10 * torch.log10(((x - e) ** 2).sum(-1) + tau * (x**2).sum(-1) + 1e-8)).mean(-1)

    est, mix = torch.randn(2, m, 400), torch.randn(2, 2, 400)
    e1, e2 = est.clone().requires_grad_(), est.clone().requires_grad_()
    l1, remix = MixITLossWrapper(f, generalized=True)(e1, mix, return_est=True)
    l2, info = MixITLoss()(e2, mix)
    l1.backward()
    l2.backward()
    assert abs(l1.item() - l2.item()) < DB_TOL
    torch.testing.assert_close(info["mixing"] @ est, remix)
    torch.testing.assert_close(e1.grad, e2.grad, atol=1e-6, rtol=1e-4)


@needs_asteroid
def test_pit_against_asteroid_live():
    from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr

    ref = torch.randn(4, 3, 600)
    est = ref[:, [1, 2, 0]] + torch.randn(4, 3, 600)
    l1 = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")(est, ref)
    l2, _ = PITLoss()(est, ref)
    assert abs(float(l1) - float(l2)) < DB_TOL


# -- Hungarian and semi-supervised ----------------------------------------------------------
def test_hungarian_matches_sources_to_slots_and_silences_the_rest():
    b, n_slots, n_src, t = 3, 5, 2, 400
    ref = torch.randn(b, n_src, t)
    est = 0.01 * torch.randn(b, n_slots, t)
    est[:, 3] = ref[:, 0]
    est[:, 1] = ref[:, 1]
    loss, info = HungarianLoss(PairwiseMSE(), unmatched="ignore")(est, ref)
    assert info["perm"].tolist() == [[3, 1]] * b
    assert info["unmatched"][0].tolist() == [True, False, True, False, True]
    assert float(loss) < 1e-6
    loss_sil, _ = HungarianLoss(PairwiseMSE(), unmatched="silence")(est, ref)
    assert float(loss_sil) > float(loss)  # unmatched slots are not silent yet
    est = est.clone().requires_grad_()
    HungarianLoss(PairwiseMSE(), unmatched="silence")(est, ref)[0].backward()
    assert est.grad[:, [0, 2, 4]].abs().sum() > 0  # silence pushes unmatched slots
    est.grad = None
    HungarianLoss(PairwiseMSE(), unmatched="ignore")(est, ref)[0].backward()
    assert est.grad[:, [0, 2, 4]].abs().sum() == 0


def test_semisupervised_combines_both_objectives_per_item():
    est, ref = torch.randn(6, 4, 300), torch.randn(6, 2, 300)
    mask = torch.tensor([True, False, True, False, False, True])
    sup, unsup = MixITLoss(NegSISDR()), MixITLoss()
    loss, info = SemiSupervisedLoss(sup, unsup, supervised_weight=0.5)(est, ref, supervised=mask)
    _, i_sup = sup(est[mask], ref[mask])
    _, i_uns = unsup(est[~mask], ref[~mask])
    torch.testing.assert_close(info["per_item"][mask], 0.5 * i_sup["per_item"])
    torch.testing.assert_close(info["per_item"][~mask], i_uns["per_item"])
    assert info["supervised_share"] == 0.5
    with pytest.raises(ValueError, match="supervised"):
        SemiSupervisedLoss()(est, ref)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss,est_shape,ref_shape",
    [
        (PITLoss(), (2, 2, 100), (2, 3, 100)),
        (PITLoss(), (2, 2, 100), (2, 2, 90)),
        (MixITLoss(), (2, 4, 100), (3, 2, 100)),
        (HungarianLoss(), (2, 1, 100), (2, 2, 100)),
        (NegSISDR(), (2, 100), (2, 2, 100)),
    ],
)
def test_bad_shapes_name_both_shapes(loss, est_shape, ref_shape):
    with pytest.raises(ValueError) as err:
        loss(torch.randn(est_shape), torch.randn(ref_shape))
    assert str(tuple(est_shape)) in str(err.value) and str(tuple(ref_shape)) in str(err.value)


@pytest.mark.parametrize(
    "objective",
    [
        PITLoss(NegSISDR()),
        PITLoss(ThresholdedSNR()),
        MixITLoss(),
        MixITLoss(NegSISDR()),
        HungarianLoss(unmatched="silence"),
    ],
)
def test_silent_signals_give_finite_loss_and_gradients(objective):
    ref = torch.randn(2, 2, 200)
    ref[0, 1] = 0.0  # silent reference
    est = torch.randn(2, 2, 200)
    est[1, 0] = 0.0  # silent estimate
    est.requires_grad_()
    loss, _ = objective(est, ref)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(est.grad).all()


def test_thresholded_snr_formula():
    s, e = torch.randn(1, 1, 500), torch.randn(1, 1, 500)
    tau = 10 ** (-30 / 10)
    expect = 10 * torch.log10(((s - e) ** 2).sum() + tau * (s**2).sum() + 1e-8)
    assert abs(float(ThresholdedSNR()(e, s)) - float(expect)) < 1e-4
    snr = 10 * torch.log10((s**2).sum() / (((s - e) ** 2).sum() + tau * (s**2).sum()))
    assert abs(float(ThresholdedSNR(normalize=True)(e, s)) + float(snr)) < 1e-4


def test_spectral_l1_pairwise_and_pit():
    from zoo.losses import PairwiseSpectralL1

    ref = torch.randn(3, 2, 2000)
    est = ref[:, [1, 0]] + 0.01 * torch.randn(3, 2, 2000)
    loss = PairwiseSpectralL1()
    pw = loss(est, ref)

    def mag(x):
        return torch.stft(x, 256, 64, window=torch.hann_window(256), return_complex=True).abs()

    torch.testing.assert_close(pw[0, 0, 1], (mag(est[0, 0]) - mag(ref[0, 1])).abs().mean())
    _, info = PITLoss(loss)(est, ref)
    assert info["perm"].tolist() == [[1, 0]] * 3


def test_waveform_l1_pairwise_and_pit():
    from zoo.losses import PairwiseL1

    ref = torch.randn(3, 2, 2, 500)  # stereo sources
    est = ref[:, [1, 0]] + 0.01 * torch.randn(3, 2, 2, 500)
    pw = PairwiseL1()(est, ref)
    assert pw.shape == (3, 2, 2)
    torch.testing.assert_close(pw[2, 0, 1], (est[2, 0] - ref[2, 1]).abs().mean())
    _, info = PITLoss(PairwiseL1())(est, ref)
    assert info["perm"].tolist() == [[1, 0]] * 3
