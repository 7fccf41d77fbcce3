"""BSS Eval v4 (museval's ``bss_eval_images`` with track-wide distortion filters), fast.

museval (Liutkus, Stöter & Ito 2018) computes, once per track, the least-squares filters (512
taps) that project each estimate on the delayed references, then scores 1 s windows: SDR, ISR,
SIR and SAR of each target. This module gives the same numbers (tested against museval to 0.05
dB) with three changes that make it more than 10x faster (``make bench``); written here because
no maintained package provides the v4 variant:

* all correlations come from one block-wise FFT pass over the track (cross-spectra summed over
  blocks, bounded memory; torch's FFT, 4x faster than scipy's here), instead of one full-length
  FFT per pair of signals;
* the filters of every target come from one linear solve with all estimates as right-hand sides
  (museval factors the same ``(S C L)^2`` matrix once per target);
* the projections of all windows are batched FFT convolutions instead of a Python loop.

Solves use scipy (LAPACK), not ``torch.linalg``, whose batched solve returns wrong values with
several threads on some CPUs.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.linalg
import torch

__all__ = ["bss_eval_v4", "xcorr_lags", "METRICS"]

METRICS = ("sdr", "isr", "sir", "sar")


def xcorr_lags(x, y, max_lag: int, block: int = (1 << 16) - 1022) -> torch.Tensor:
    """Cross-correlations at lags ``-max_lag..max_lag`` of every row of ``x`` with every row of
    ``y`` (float64 arrays or tensors, on any device; signals zero outside their support).

    Returns ``(P, Q, 2 max_lag + 1)`` float64 on ``x``'s device:
    ``out[p, q, max_lag + m] = sum_n x[p, n] y[q, n + m]``.
    """
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float64))
    y = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y, dtype=np.float64))
    dev, f64 = x.device, torch.float64
    p, n = x.shape
    q, lag = y.shape[0], max_lag
    nb = -(-n // block)
    nfft = 1 << int(np.ceil(np.log2(block + 2 * lag)))  # torch FFTs are fastest at powers of 2
    xpad = torch.zeros(p, nb * block, dtype=f64, device=dev)
    xpad[:, :n] = x
    xblocks = xpad.reshape(p, nb, block)
    ypad = torch.zeros(q, nb * block + 2 * lag, dtype=f64, device=dev)
    ypad[:, lag : lag + n] = y
    yblocks = ypad.unfold(1, block + 2 * lag, block)[:, :nb]  # overlapping views, no copy
    acc = torch.zeros(nfft // 2 + 1, p, q, dtype=torch.complex128, device=dev)
    step = max(1, (1 << 19) // nfft)  # blocks per pass: small, reused buffers
    for k in range(0, nb, step):
        kk = min(step, nb - k)
        xb = torch.zeros(p, kk, nfft, dtype=f64, device=dev)
        xb[..., :block] = xblocks[:, k : k + kk]
        yb = torch.zeros(q, kk, nfft, dtype=f64, device=dev)
        yb[..., : block + 2 * lag] = yblocks[:, k : k + kk]
        # cross-spectra summed over blocks: a batched product over frequencies, on contiguous
        # copies (5x faster here than on the permuted views)
        xs = torch.fft.rfft(xb).permute(2, 0, 1).contiguous()  # (F, P, kk)
        ys = torch.fft.rfft(yb).permute(2, 1, 0).contiguous()  # (F, kk, Q)
        acc += xs.conj() @ ys
    return torch.fft.irfft(acc.permute(1, 2, 0), nfft)[..., : 2 * lag + 1]


def _safe_db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, np.inf, 10 * np.log10(num / np.where(den == 0, 1, den)))


def bss_eval_v4(
    references: np.ndarray,
    estimates: np.ndarray,
    win: int = 44100,
    hop: int = 44100,
    filters_len: int = 512,
    names: list[str] | None = None,
    silent_estimates: str = "error",
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Framewise SDR, ISR, SIR, SAR as ``museval.evaluate(..., mode="v4")`` computes them.

    Args:
        references, estimates: ``(S, T, C)`` arrays (museval's layout), estimate ``j`` scored
            against reference ``j``; estimates are zero-padded or cut to the references' length.
        win, hop: window and hop in samples (museval: 1 s both).
        filters_len: distortion filter taps (512).
        names: target names, only for error messages.
        silent_estimates: an estimate that is zero over the whole signal makes museval raise;
            ``"error"`` does the same, ``"score"`` gives it its SDR (0 dB where the reference
            sounds: the error is the reference itself) and NaN ISR/SIR/SAR (no projection), so
            that a model that outputs silence is scored, not crashed.
        device: where the correlations, solves and projections run (``"cuda"``; default CPU).
            Everything is float64 on every device; on the CPU the solves use scipy (see the
            module's note), elsewhere ``torch.linalg``'s Cholesky.

    Returns:
        ``{"sdr", "isr", "sir", "sar"}`` → ``(S, n_windows)`` in dB; windows where a reference or
        an estimate is silent are NaN (museval aggregates with ``nanmedian``).
    """
    ref = np.asarray(references, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    if ref.ndim == 2:
        ref, est = ref[..., None], est[..., None]
    if (
        ref.ndim != 3
        or est.ndim != 3
        or ref.shape[0] != est.shape[0]
        or ref.shape[2] != est.shape[2]
    ):
        raise ValueError(
            f"references {ref.shape} and estimates {est.shape} must be (sources, time, channels) "
            "with the same sources and channels"
        )
    s, n, c = ref.shape
    if est.shape[1] != n:  # museval's pad_or_truncate
        est = (
            est[:, :n] if est.shape[1] > n else np.pad(est, ((0, 0), (0, n - est.shape[1]), (0, 0)))
        )
    names = names or [f"source {j}" for j in range(s)]
    silent_est = np.all(est.sum(-1) == 0, axis=1)  # (S,)
    checks = [("reference", np.all(ref.sum(-1) == 0, axis=1))]
    if silent_estimates == "error":
        checks.append(("estimate", silent_est))
    for what, silent in checks:
        if silent.any():
            raise ValueError(
                f"the {what} of {names[int(np.argmax(silent))]} is silent over the whole signal: "
                "BSS Eval is undefined (museval refuses it too)"
            )
    L = filters_len
    dev = torch.device(device) if device is not None else torch.device("cpu")
    # One (2, S, C, T) copy of both, rows (source, channel); reused by the windows below (fresh
    # memory is slow here: every avoided full-length copy saves ~0.3 s a minute of audio).
    signals = torch.empty(2, s, c, n, dtype=torch.float64, device=dev)
    signals[0] = torch.from_numpy(ref).permute(0, 2, 1)
    signals[1] = torch.from_numpy(est).permute(0, 2, 1)
    rows = signals.reshape(2 * s * c, n)
    xc = xcorr_lags(rows[: s * c], rows, L - 1)  # (SC, 2SC, 2L-1)
    a = s * c
    # G[(a, m1), (b, m2)] = xc[a, b, L-1+m1-m2]: Toeplitz blocks gathered in one copy.
    lags = (L - 1) + torch.arange(L, device=dev)[:, None] - torch.arange(L, device=dev)
    gram = xc[:, :a][..., lags].permute(0, 2, 1, 3).reshape(a * L, a * L)  # (SC L, SC L)
    d = xc[:, a:, L - 1 :].permute(0, 2, 1).reshape(a * L, a)  # (SC L, S_est C)
    own = torch.empty(s, c, L, c, dtype=torch.float64, device=dev)  # estimate on own reference
    for j in range(s):
        blk = slice(j * c * L, (j + 1) * c * L)
        own[j] = _solve(gram[blk, blk].clone(), d[blk, j * c : (j + 1) * c]).reshape(c, L, c)
    filt = _solve(gram, d).reshape(s, c, L, s, c)  # (i, ci, m, e, co); overwrites gram
    nwin = int(np.floor((n - win + hop) / hop)) if win < n else 1
    length = min(win, n)
    nfft = scipy.fft.next_fast_len(length + L - 1, real=True)  # linear convolutions, no wrap
    # Filters as (F, S C, S C) matrices mapping reference (i, ci) to estimate (e, co) spectra;
    # the own-source filters are block diagonal.
    h_all = torch.fft.rfft(filt.reshape(a, L, a), nfft, dim=1).permute(1, 0, 2).contiguous()
    h_own = torch.zeros_like(h_all)
    for j in range(s):
        blk = torch.fft.rfft(own[j], nfft, dim=1).permute(1, 0, 2)  # (F, C, C)
        h_own[:, j * c : (j + 1) * c, j * c : (j + 1) * c] = blk
    # Energies of the projections by Parseval on the rfft bins: no inverse FFTs.
    weight = torch.full((nfft // 2 + 1,), 2.0 / nfft, dtype=torch.float64, device=dev)
    weight[0] = 1.0 / nfft
    if nfft % 2 == 0:
        weight[-1] = 1.0 / nfft

    def energy(spec):  # (F, nw, S C) -> (S, nw)
        power = torch.einsum("fwk,f->kw", spec.real.square() + spec.imag.square(), weight)
        return power.reshape(s, c, -1).sum(1).cpu().numpy()

    windows = signals.unfold(-1, length, hop)[..., :nwin, :]  # (2, S, C, nwin, length) view
    silent_est_t = torch.from_numpy(silent_est).to(dev)
    out = {k: np.empty((s, nwin)) for k in METRICS}
    step = max(1, (1 << 21) // (a * nfft))  # windows per pass (~100 MB of spectra)
    for w0 in range(0, nwin, step):
        nw = min(step, nwin - w0)
        buf = torch.zeros(2, s, c, nw, nfft, dtype=torch.float64, device=dev)
        buf[..., :length] = windows[..., w0 : w0 + nw, :]
        r, e = buf[0, ..., :length], buf[1, ..., :length]  # (S, C, nw, length)
        spec = torch.fft.rfft(buf)  # (2, S, C, nw, F)
        spec = spec.reshape(2, a, nw, -1).permute(0, 3, 2, 1)  # (2, F, nw, S C)
        rf, ef = spec[0].contiguous(), spec[1].contiguous()
        p_all, p_own = rf @ h_all, rf @ h_own  # (F, nw, S C) projections
        true = r.square().sum((1, 3)).cpu().numpy()  # (S, nw)
        res = {
            "sdr": _safe_db(true, (e - r).square().sum((1, 3)).cpu().numpy()),
            "isr": _safe_db(true, energy(p_own - rf)),
            "sir": _safe_db(energy(p_own), energy(p_all - p_own)),
            "sar": _safe_db(energy(p_all), energy(ef - p_all)),
        }
        silent = (buf.sum(2) == 0).all(-1)  # (2, S, nw)
        silent[1, silent_est_t] = False  # whole-signal silent estimates are scored, not skipped
        silent = silent.any(1).any(0).cpu().numpy()  # a window where any source is silent is NaN
        for k, v in res.items():
            v[:, silent] = np.nan
            out[k][:, w0 : w0 + nw] = v
    for k in ("isr", "sir", "sar"):  # silent estimates (silent_estimates="score"): no projection
        out[k][silent_est] = np.nan
    return out


def _solve(a: torch.Tensor, b: torch.Tensor, linalg: bool | None = None) -> torch.Tensor:
    """``(a + eps I)^-1 b`` for a Gram matrix ``a`` (overwritten), museval's regularisation.

    Cholesky (half the work of museval's LU, same solution up to rounding for a positive
    definite matrix); LU, then least squares (museval's fallback) when it is not. On the CPU
    through scipy (LAPACK): torch's batched CPU solves return wrong values with several threads
    on some CPUs; on a GPU through ``torch.linalg`` (``linalg``: force one or the other).
    """
    eps = np.finfo(float).eps
    a.diagonal().add_(eps)
    use_torch = a.device.type != "cpu" if linalg is None else linalg
    if use_torch:
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return torch.cholesky_solve(b, chol)
        out, info = torch.linalg.solve_ex(a, b)
        return out if int(info) == 0 else torch.linalg.lstsq(a, b).solution
    an, bn = a.numpy(), b.numpy()
    try:
        out = scipy.linalg.cho_solve(
            scipy.linalg.cho_factor(an, overwrite_a=False, check_finite=False), bn,
            check_finite=False,
        )  # fmt: skip
    except np.linalg.LinAlgError:
        try:
            out = scipy.linalg.solve(an, bn, check_finite=False)
        except np.linalg.LinAlgError:
            out = scipy.linalg.lstsq(an, bn)[0]
    return torch.from_numpy(np.ascontiguousarray(out))
