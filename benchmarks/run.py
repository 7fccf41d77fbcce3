"""Speed and memory against the peers, in one process per table; writes BENCHMARKS.md.

Usage (the peers come with ``make bench-install``)::

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 \
    MALLOC_TOP_PAD_=1073741824 .venv/bin/python benchmarks/run.py --out BENCHMARKS.md

Every case runs ``--repeats`` times after warm-up runs; the table shows medians. Model memory is
the peak resident-set growth during one call, measured in a separate fresh process without the
MALLOC_* settings (CPU has no allocator statistics).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

B, SR, SECONDS = 8, 8000, 4
TAU = 1e-3


def timeit(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fwd_bwd(loss_fn, est, ref):
    def run():
        e = est.detach().requires_grad_()
        loss_fn(e, ref).backward()

    return run


# -- losses ------------------------------------------------------------------------------------
def loss_cases():
    from zoo.losses import MixITLoss, NegSISDR, PITLoss, ThresholdedSNR

    peers = {}
    try:
        from asteroid.losses import MixITLossWrapper, PITLossWrapper, pairwise_neg_sisdr

        peers["asteroid"] = True
    except ImportError:
        pass
    try:
        import fast_bss_eval.torch as fbe

        peers["fast_bss_eval"] = True
    except ImportError:
        pass
    from torchmetrics.functional.audio import (
        permutation_invariant_training,
        scale_invariant_signal_distortion_ratio,
    )

    t = SR * SECONDS
    rows = []
    for n in (2, 3, 4):
        ref = torch.randn(B, n, t)
        est = ref[:, torch.randperm(n)] + torch.randn(B, n, t)
        cases = {"zoo": lambda e, r: PITLoss(NegSISDR())(e, r)[0]}
        if "asteroid" in peers:
            w = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
            cases["asteroid"] = lambda e, r, w=w: w(e, r)
        cases["torchmetrics"] = lambda e, r: (
            -permutation_invariant_training(
                e,
                r,
                lambda p, q: scale_invariant_signal_distortion_ratio(p, q, zero_mean=True),
                mode="speaker-wise",
                eval_func="max",
            )[0].mean()
        )
        if "fast_bss_eval" in peers:
            cases["fast_bss_eval"] = lambda e, r: fbe.si_sdr_pit_loss(e, r, zero_mean=True).mean()
        for peer, fn in cases.items():
            rows.append(("PIT neg SI-SDR", f"n={n}", peer, timeit(fwd_bwd(fn, est, ref), 10)))
    for m in (4, 8, 16):
        mix = torch.randn(B, 2, t)
        est = torch.randn(B, m, t)
        loss = MixITLoss(ThresholdedSNR(30.0))
        cases = {"zoo": lambda e, r, loss=loss: loss(e, r)[0]}
        if "asteroid" in peers:

            def f(e, x):
                err = ((x - e) ** 2).sum(-1)
                return (10 * torch.log10(err + TAU * (x**2).sum(-1) + 1e-8)).mean(-1)

            if m <= 8:
                w = MixITLossWrapper(f, generalized=True)
                cases["asteroid"] = lambda e, r, w=w: w(e, r)
        for peer, fn in cases.items():
            reps = 3 if peer == "asteroid" else 10
            rows.append(
                (
                    "MixIT thresholded SNR",
                    f"M={m}",
                    peer,
                    timeit(fwd_bwd(fn, est, mix), reps, warmup=1),
                )
            )
    return rows


# -- models ------------------------------------------------------------------------------------
MODEL_CASE = r"""
import json, sys, time, statistics, torch
torch.set_num_threads(2)
which, case = sys.argv[1], sys.argv[2]
if which == "zoo":
    from zoo.backbones import conv_tasnet_paper
    model = conv_tasnet_paper(n_src=2)
    call = lambda x: model(x)
elif which == "torchaudio":
    from torchaudio.models import ConvTasNet
    model = ConvTasNet(num_sources=2)
    call = lambda x: model(x)
else:
    from asteroid.models import ConvTasNet
    model = ConvTasNet(n_src=2)
    call = lambda x: model(x)
params = sum(p.numel() for p in model.parameters())
if case == "infer":
    model.eval()
    x = torch.randn(1, 1, 80000)
    def run():
        with torch.inference_mode():
            call(x)
else:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(4, 1, 32000)
    def run():
        y = call(x)
        loss = y.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # kB
if sys.argv[3] == "memory":
    # One call in a process where every allocation of 1 MiB and more is mmapped and given back
    # when freed (MALLOC_MMAP_THRESHOLD_ set by model_cases): the RSS high-water mark follows the
    # live-tensor peak. glibc's default threshold moves with the allocation history, which made
    # the same step read anywhere from 5.5 to 7.4 GiB from run to run.
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark (Linux)
    base = status("VmRSS:")
    run()
    print(json.dumps({"peak_mib": (status("VmHWM:") - base) / 1024}))
    sys.exit(0)
run()  # warm-up
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"median_s": statistics.median(times), "params": params}))
"""


def model_cases(repeats: int):
    rows = []
    peers = ["zoo", "torchaudio"]
    try:
        import asteroid  # noqa: F401

        peers.append("asteroid")
    except ImportError:
        pass
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    plain_env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)  # fixed: see MODEL_CASE's memory mode

    def sub(peer, case, mode, env=None):
        out = subprocess.run(
            [sys.executable, "-c", MODEL_CASE, peer, case, mode],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
        )
        if out.returncode:
            raise RuntimeError(out.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1])

    for case in ("infer", "train"):
        for peer in peers:
            r = sub(peer, case, str(repeats))
            r.update(sub(peer, case, "memory", plain_env))
            rows.append((case, peer, r))
    return rows


def separate_cases(minutes=(2.5, 5.0, 10.0)):
    """``zoo separate`` on long 44.1 kHz stereo files: wall time and peak RSS of the process."""
    import tempfile

    import numpy as np
    import soundfile as sf

    from zoo.backbones import conv_tasnet_paper
    from zoo.hub.folder import export_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        export_model(
            conv_tasnet_paper(),
            {"class_path": "zoo.backbones.ConvTasNet", "init_args": {"n_src": 2}},
            tmp / "model",
        )
        rng = np.random.default_rng(0)
        for m in minutes:
            n = int(m * 60 * 44100)
            wav = tmp / f"in_{m}.wav"
            with sf.SoundFile(str(wav), "w", 44100, 2, subtype="PCM_16") as f:
                for start in range(0, n, 44100 * 30):
                    k = min(44100 * 30, n - start)
                    f.write((0.1 * rng.standard_normal((k, 2))).astype(np.float32))
            cmd = [
                sys.executable,
                "-m",
                "zoo.cli",
                "separate",
                str(tmp / "model"),
                str(wav),
                "-o",
                str(tmp / f"out_{m}"),
                "--chunk",
                "8",
            ]
            t = time.perf_counter()
            out = subprocess.run(
                ["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, cwd=REPO
            )
            wall = time.perf_counter() - t
            if out.returncode:
                raise RuntimeError(out.stderr[-2000:])
            peak_kb = int(out.stderr.strip().splitlines()[-1])
            rows.append((m, wall, peak_kb / 1024))
            print(f"separate {m} min: {wall:.1f} s, peak {peak_kb / 1024:.0f} MiB", flush=True)
    return rows


BSS_TITLE = "## BSS Eval v4 (museval's metrics): zoo.eval.bsseval against museval"


def bsseval_cases(seconds=(10, 30, 60, 240), repeats=3):
    """One track of 4 stereo 44.1 kHz sources; the zoo path (median of ``repeats``) against
    museval 0.4.1 (one run: it is slow and steady), and the largest difference of the per-target
    median SDR/ISR/SIR/SAR."""
    import museval
    import numpy as np
    from scipy.signal import lfilter

    from zoo.eval.bsseval import bss_eval_v4

    rows = []
    rng = np.random.default_rng(0)
    for sec in seconds:
        ref = lfilter([1], [1, -0.9], rng.standard_normal((4, 44100 * sec, 2)), axis=1)
        est = np.einsum("ij,jtc->itc", np.eye(4) + 0.2 * rng.random((4, 4)), ref)
        est += 0.05 * rng.standard_normal(est.shape)
        ours = {}

        def run(ours=ours, ref=ref, est=est):
            ours.update(bss_eval_v4(ref, est))

        t_ours = timeit(run, repeats if sec < 120 else 1, warmup=1 if sec < 120 else 0)
        t = time.perf_counter()
        peer = museval.evaluate(ref, est, win=44100, hop=44100, mode="v4")
        t_peer = time.perf_counter() - t
        diff = max(
            float(np.abs(np.nanmedian(ours[k], 1) - np.nanmedian(v, 1)).max())
            for k, v in zip(("sdr", "isr", "sir", "sar"), peer, strict=True)
        )
        rows.append((sec, t_ours, t_peer, diff))
        print(f"bsseval {sec:3d} s: zoo {t_ours:.2f} s, museval {t_peer:.2f} s, diff {diff:.1e}")
    return rows


def render_bsseval(rows) -> str:
    lines = [
        BSS_TITLE,
        "",
        "One track, 4 stereo sources at 44.1 kHz, 1 s windows, 512-tap filters (museval's "
        "`evaluate(..., mode='v4')`, as `eval_mus_track` calls it). The zoo path: block-wise "
        "FFT correlations, one Cholesky solve for all targets, Parseval energies of batched "
        "FFT projections. Its fixed cost is the 4096x4096 solve (~0.5 s here), so the "
        "speed-up grows with track length; 240 s is a typical MUSDB18 track (one run each).",
        "",
        "| track length | zoo s | museval s | speed-up | max abs diff of per-target medians (dB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for sec, ours, peer, diff in rows:
        lines.append(f"| {sec} s | {ours:.2f} | {peer:.2f} | {peer / ours:.1f}x | {diff:.1e} |")
    return "\n".join(lines) + "\n"


def replace_section(text: str, title: str, section: str) -> str:
    """``text`` with the section starting at ``title`` replaced by ``section`` (or appended)."""
    if title not in text:
        return text.rstrip("\n") + "\n\n" + section
    head, rest = text.split(title, 1)
    tail = rest.split("\n## ", 1)
    return head + section + ("\n## " + tail[1] if len(tail) > 1 else "")


def update_section(path: Path, title: str, section: str) -> None:
    """Write ``section`` into the Markdown file ``path`` in place of the one at ``title``
    (created, under a ``# Benchmarks`` heading, when it is not there yet)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(text, title, section))
    print(f"updated {path}")


def section_of(text: str, title: str) -> str | None:
    """The section of ``text`` that starts at ``title`` (up to the next ``## `` heading)."""
    if title not in text:
        return None
    rest = text.split(title, 1)[1].split("\n## ", 1)[0]
    return title + rest.rstrip("\n") + "\n"


# Sections other scripts write into the same file (kept when `make bench` rewrites it)
KEPT = (
    "## Paper-scale rehearsal",
    "## Data loading throughput",
    "## Streaming (causal Conv-TasNet)",
    "## Music separators: one 30 s stereo 44.1 kHz song, CPU",
)


def render(loss_rows, model_rows, sep_rows=()) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (benchmarks/run.py) on {time.strftime('%Y-%m-%d')}; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, CPU. Medians over repeated runs; all peers measured in the "
        "same run. Timing on this shared 2-core VM is noisy: compare rows within a table.",
        "",
        f"## Losses: forward + backward, batch {B}, {SECONDS} s at {SR // 1000} kHz",
        "",
        "| loss | size | implementation | median ms | vs zoo |",
        "|---|---|---|---:|---:|",
    ]
    zoo = {(r[0], r[1]): r[3] for r in loss_rows if r[2] == "zoo"}
    for kind, size, peer, s in loss_rows:
        lines.append(
            f"| {kind} | {size} | {peer} | {s * 1000:.2f} | {s / zoo[(kind, size)]:.1f}x |"
        )
    if not any(r[2] == "asteroid" and r[1] == "M=16" for r in loss_rows):
        lines.append("")
        lines.append(
            "Asteroid's MixIT at M=16 is not run: it loops over 65,536 partitions in "
            "Python (256 times the M=8 work)."
        )
    lines += [
        "",
        "## Conv-TasNet (paper configuration, 2 sources)",
        "",
        "Inference: one 10 s mixture at 8 kHz. Training step: batch 4 × 4 s, forward + backward + "
        "Adam step. Memory: peak RSS growth during one call, in a fresh process where glibc "
        "mmaps every allocation of 1 MiB and more (`MALLOC_MMAP_THRESHOLD_=1048576`), so that "
        "RSS follows the live tensors and repeats to the MiB.",
        "",
        "| case | implementation | params | median s | peak MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for case, peer, r in model_rows:
        lines.append(
            f"| {case} | {peer} | {r['params']:,} | {r['median_s']:.3f} | {r['peak_mib']:.0f} |"
        )
    if sep_rows:
        lines += [
            "",
            "## `zoo separate` on long files",
            "",
            "A 44.1 kHz stereo PCM16 file separated by the paper-size Conv-TasNet (8 kHz, random "
            "weights: speed and memory do not depend on them): resampled to 8 kHz block by block, "
            "8 s chunks with 25 % overlap, each channel separated, resampled back and written "
            "block by block as float WAVs. Peak memory is the whole process's maximum RSS "
            "(`/usr/bin/time`, default glibc allocator settings, torch's own import included), "
            "one run each.",
            "",
            "| length | wall time s | s per audio minute | peak MiB |",
            "|---:|---:|---:|---:|",
        ]
        for m, wall, peak in sep_rows:
            lines.append(f"| {m:g} min | {wall:.1f} | {wall / m:.1f} | {peak:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="BENCHMARKS.md")
    p.add_argument("--model-repeats", type=int, default=5)
    p.add_argument("--skip-separate", action="store_true", help="skip the long-file runs")
    p.add_argument(
        "--only-separate",
        action="store_true",
        help="re-run only the long-file section of an existing --out file",
    )
    p.add_argument(
        "--only-bsseval",
        action="store_true",
        help="re-run only the BSS Eval section of an existing --out file",
    )
    p.add_argument(
        "--only-models",
        action="store_true",
        help="re-run only the Conv-TasNet section of an existing --out file",
    )
    a = p.parse_args()
    torch.set_num_threads(2)
    if a.only_models:
        text = Path(a.out).read_text()
        title = "## Conv-TasNet (paper configuration, 2 sources)"
        section = title + render([], model_cases(a.model_repeats)).split(title)[1]
        Path(a.out).write_text(replace_section(text, title, section))
        print(f"updated {a.out}")
        return
    if a.only_bsseval:
        text = Path(a.out).read_text() if Path(a.out).exists() else "# Benchmarks\n"
        Path(a.out).write_text(replace_section(text, BSS_TITLE, render_bsseval(bsseval_cases())))
        print(f"updated {a.out}")
        return
    if a.only_separate:  # re-measure the long-file section of an existing BENCHMARKS.md
        text = Path(a.out).read_text()
        title = "## `zoo separate` on long files"
        section = title + render([], [], separate_cases()).split(title)[1]
        Path(a.out).write_text(replace_section(text, title, section))
        print(f"updated {a.out}")
        return
    loss_rows = loss_cases()
    for r in loss_rows:
        print(f"{r[0]:24s} {r[1]:6s} {r[2]:14s} {r[3] * 1000:9.2f} ms", flush=True)
    model_rows = model_cases(a.model_repeats)
    for r in model_rows:
        print(r, flush=True)
    sep_rows = separate_cases() if not a.skip_separate else []
    text = render(loss_rows, model_rows, sep_rows)
    old = Path(a.out).read_text() if Path(a.out).exists() else ""
    for title in KEPT:  # `make rehearse`'s and `make bench-data`'s tables stay
        if (kept := section_of(old, title)) is not None:
            text = replace_section(text, title, kept)
    Path(a.out).write_text(replace_section(text, BSS_TITLE, render_bsseval(bsseval_cases())))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
