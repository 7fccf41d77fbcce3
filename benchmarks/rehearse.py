"""Paper-scale rehearsal: every recipe's paper configuration on generated data of the real
shapes, through the path a user runs, on the CPU.

Usage::

    make rehearse                       # all recipes; writes rehearse/report.json, the tracked
                                        # benchmarks/rehearse-report.json and the
                                        # "Paper-scale rehearsal" table of BENCHMARKS.md
    python benchmarks/rehearse.py --recipes libri2mix_pit musdb18_umx --no-write

Per recipe, in a process of its own (so that peak memory is the recipe's own), ``run_recipe``
with the recipe's paper configuration (full network, paper segment) on the generated data:
``--trainer.limit_train_batches`` steps of one epoch, then the validation Lightning runs at the
epoch's end on one item (``limit_val_batches=1``: a whole song for music, through the recipe's
chunked evaluation; Libri2Mix validates the recipe's ``val_segment``), the test of the best
checkpoint on one item (a whole utterance / a whole song), metrics.json and the export; then
``zoo.load`` of the export and ``zoo separate`` of one full-length mixture file.

Measured: seconds per training step (median over the steps after the first), peak resident
memory of the main process during training and during validation (VmHWM, reset through
``/proc/self/clear_refs`` at each phase; data-loader workers are other processes and not
counted), the longest item validated and tested, and the wall time of each phase.

Generated data (:mod:`zoo.data.mini`, :mod:`zoo.data.musdb_mini`, the real on-disk formats):
Libri2Mix ``min`` mixtures of 20-35 s utterances (LibriSpeech's utterances reach ~35 s) at 8 and
16 kHz; MUSDB18-HQ 44.1 kHz stereo songs of ``--song-seconds`` (180 s: the short end of the
issue's 3-4 minutes; MUSDB18's songs average ~3.9 min) for training and validation, and one
``--test-seconds`` song for the test (the whole-song path is what validation rehearses; the test
repeats it on a shorter song to keep the run within 30 minutes on 2 cores).

Batch: each recipe's paper per-device batch, unless ``BATCH`` below lowers it to fit 8 GiB of
CPU memory; the report states both. ``CHECKPOINTED`` recipes run with the backbone's
``checkpoint_blocks`` (activations recomputed in the backward: same values, less memory), marked
in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TITLE = "## Paper-scale rehearsal"
TRACKED = REPO / "benchmarks" / "rehearse-report.json"  # the BENCHMARKS.md table's figures
# glibc keeps freed memory for reuse instead of returning (and re-faulting) it at every step:
# fresh pages are slow on this VM (the benchmarks' settings, README "Benchmarks"). Peak resident
# memory then includes freed memory kept for reuse within a phase (each phase starts trimmed).
MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
}
STEPS = 3  # training steps per recipe: the first is warm-up, the rest are timed
# Per-device batches lowered from the paper's where the paper's does not fit this machine (24
# GiB), and the waveform music networks with their TCN blocks checkpointed: Conv-TasNet at
# 44.1 kHz took 17.4 GiB in this table at batch 1 (one stereo 4 s item) as it is, 5.4 GiB
# checkpointed; Meta-TasNet 7.3 GiB for one mono 8 s item, 4.9 GiB checkpointed (forward +
# backward alone, glibc mmapping from 1 MiB; the table's peaks are higher: whole steps with the
# optimiser, under MALLOC's keep-freed-memory settings). Every other recipe runs as it is at the
# paper's batch; the notes name those over LIMIT_GIB with the need.
BATCH = {"musdb18_convtasnet": 1, "musdb18_metatasnet": 1}
# TDCN++ at the paper's batch 6 needs 10.0 GiB (MixIT) / 9.5 GiB (semi-supervised) as it is.
CHECKPOINTED = {
    "musdb18_convtasnet",
    "musdb18_metatasnet",
    "libri2mix_mixit",
    "libri2mix_semisup_mixit",
}
LIMIT_GIB = 8  # the memory the issue asks a paper-scale recipe to fit on the CPU
# 48 training mixtures: three batches of 16 (the AudioSlots recipes' batch)
LIBRI = dict(
    n_train=48,
    n_dev=2,
    n_test=2,
    speakers_train=8,
    speakers_dev=2,
    speakers_test=2,
    utterances_per_speaker=4,
    min_duration=20.0,
    max_duration=35.0,
)


def _hwm_gib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 2**20


def _reset_hwm() -> None:
    """Return the memory freed so far to the system (glibc keeps it under MALLOC), then restart
    the peak: the next phase's peak is what is live plus what that phase allocates."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


class RehearsalProbe(L.Callback):
    """Step times, per-phase peak memory and item lengths of one recipe run (JSON to ``out``)."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.r = {"step_s": [], "val_samples": 0, "test_samples": 0, "phase_s": {}}
        self.t0 = 0.0

    def _write(self) -> None:
        self.out.write_text(json.dumps(self.r, indent=1))

    def _start(self) -> None:
        _reset_hwm()
        self.t0 = time.perf_counter()

    def _end(self, phase: str) -> None:
        self.r["phase_s"][phase] = round(time.perf_counter() - self.t0, 2)
        self.r[f"peak_{phase}_gib"] = round(_hwm_gib(), 3)
        self._write()

    def on_train_start(self, trainer, module):
        self.r["batch_size"] = trainer.datamodule.batch_size
        self.r["sample_rate"] = module.backbone.sample_rate
        self.r["params"] = sum(p.numel() for p in module.parameters())
        self._start()

    def on_train_batch_start(self, trainer, module, batch, idx):
        self.step_t0 = time.perf_counter()
        self.r["train_shape"] = list(batch["mix"].shape)

    def on_train_batch_end(self, trainer, module, outputs, batch, idx):
        self.r["step_s"].append(round(time.perf_counter() - self.step_t0, 3))

    def on_validation_start(self, trainer, module):
        if not trainer.sanity_checking:
            self._end("train")
            self._start()

    def on_validation_batch_start(self, trainer, module, batch, idx, dataloader_idx=0):
        self.r["val_samples"] = max(self.r["val_samples"], int(batch["mix"].shape[-1]))

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self._end("val")

    def on_test_start(self, trainer, module):
        self._start()

    def on_test_batch_start(self, trainer, module, batch, idx, dataloader_idx=0):
        self.r["test_samples"] = max(self.r["test_samples"], int(batch["mix"].shape[-1]))

    def on_test_end(self, trainer, module):
        self._end("test")


def make_data(base: Path, song_seconds: float, test_seconds: float) -> dict[str, Path]:
    """The generated datasets (reused when already there with the same spec)."""
    from zoo.data.mini import MiniSpec, prepare_libri2mix_mini
    from zoo.data.musdb_mini import MusdbMiniSpec, prepare_musdb18_mini

    base, roots = base.resolve(), {}
    for rate in (8000, 16000):
        spec = MiniSpec(sample_rate=rate, **LIBRI)
        roots[f"libri{rate}"] = prepare_libri2mix_mini(base / f"Libri2Mix-{rate // 1000}k", spec)
    songs = prepare_musdb18_mini(
        base / "MUSDB18-HQ",
        MusdbMiniSpec(
            n_train=2, n_valid=1, n_test=0, seconds=song_seconds, with_stempeg_example=False
        ),
    )
    short = prepare_musdb18_mini(
        base / "MUSDB18-HQ-test",
        MusdbMiniSpec(
            n_train=1, n_valid=0, n_test=1, seconds=test_seconds, with_stempeg_example=False
        ),
    )
    # the assembled set: the long songs' train folder and setup, the short song as the test
    music = base / "music"
    if not music.exists():
        (music / "test").mkdir(parents=True)
        for f in ("train", "mini_setup.yaml"):
            os.symlink(songs / f, music / f)
        for track in (short / "test").iterdir():
            os.symlink(track, music / "test" / track.name)
    roots["music"] = music
    return roots


def one(name: str, roots_json: str, work: Path) -> dict:
    """One recipe (run in its own process by :func:`main`)."""
    from zoo.backbones.capabilities import NeedsSources
    from zoo.hub.api import load
    from zoo.run.recipe import load_recipe
    from zoo.run.separate import separate_file

    roots = {k: Path(v) for k, v in json.loads(roots_json).items()}
    results = work / "results"
    probe = work / f"{name}.probe.json"
    recipe = load_recipe(name)
    config = recipe.merged(False)  # the paper configuration, as the run resolves it
    music = recipe.mini_dataset == "musdb18-mini"
    paper_batch = config["data"]["init_args"]["batch_size"]
    # Libri2Mix is read at the backbone's rate (every Libri2Mix recipe states it)
    stated = config["model"]["backbone"].get("init_args", {}).get("sample_rate")
    root = roots["music"] if music else roots["libri16000" if stated == 16000 else "libri8000"]
    overrides = [
        "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={STEPS}",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        "--trainer.callbacks+="
        + json.dumps(
            {"class_path": "benchmarks.rehearse.RehearsalProbe", "init_args": {"out": str(probe)}}
        ),
    ]
    if name in BATCH:
        overrides.append(f"--data.init_args.batch_size={BATCH[name]}")
    if name in CHECKPOINTED:
        overrides.append("--model.backbone.init_args.checkpoint_blocks=true")
    if music:  # the generated songs' validation split
        overrides += ["--data.init_args.setup_file=mini_setup.yaml"]
    else:  # the generated set has train-100 only
        overrides += ["--data.init_args.train_subset=train-100"]
    t0 = time.perf_counter()
    from zoo.run.train import run_recipe

    metrics = run_recipe(name, data=str(root), overrides=overrides, results=results, fresh=True)
    wall = time.perf_counter() - t0
    r = json.loads(probe.read_text())
    rate = r["sample_rate"]
    model = results / name / "model"
    t1 = time.perf_counter()
    sep = load(model)
    load_s = time.perf_counter() - t1
    mixture = _longest_mixture(root, music, rate)
    separate_s, written = None, []
    if not isinstance(sep.backbone, NeedsSources):  # a reference row: no separator
        t1 = time.perf_counter()
        written = separate_file(
            str(model), [str(mixture)], work / "separated" / name, overwrite=True, quiet=True
        )
        separate_s = round(time.perf_counter() - t1, 2)
    import soundfile as sf

    info = sf.info(str(mixture))
    steps = r["step_s"][1:] or r["step_s"]
    return {
        "recipe": name,
        "params": r["params"],
        "sample_rate": rate,
        "paper_batch": paper_batch,
        "batch": r.get("batch_size"),
        "checkpointed": name in CHECKPOINTED,
        "train_shape": r.get("train_shape"),
        "s_per_step": round(statistics.median(steps), 3),
        "steps": len(r["step_s"]),
        "peak_train_gib": r.get("peak_train_gib"),
        "peak_val_gib": r.get("peak_val_gib"),
        "peak_test_gib": r.get("peak_test_gib"),
        "val_item_s": round(r["val_samples"] / rate, 2),
        "test_item_s": round(r["test_samples"] / rate, 2),
        "phase_s": r["phase_s"],
        "test_si_sdr": metrics.get("si_sdr"),
        "load_s": round(load_s, 2),
        "sources": list(sep.sources),
        "separate_file_s": round(info.frames / info.samplerate, 2),
        "separate_s": separate_s,
        "separated": len(written),
        "wall_s": round(wall, 1),
    }


def _longest_mixture(root: Path, music: bool, rate: int) -> Path:
    import soundfile as sf

    if music:
        files = list((root / "test").glob("*/mixture.wav"))
    else:
        files = list(root.glob(f"wav{rate // 1000}k/min/test/mix_clean/*.wav"))
    return max(files, key=lambda f: sf.info(str(f)).frames)


def render(report: dict) -> str:
    import platform

    rows, song_seconds, test_seconds = (report[k] for k in ("rows", "song_seconds", "test_seconds"))
    lines = [
        TITLE,
        "",
        f"Generated by `make rehearse` (benchmarks/rehearse.py) on {time.strftime('%Y-%m-%d')}; "
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        "**CPU figures** (no GPU was used). Each recipe's paper configuration (full network, "
        "paper segment) in its own process on generated data of the real formats and lengths: "
        f"{STEPS} training steps, validation on one full-length item (a whole {song_seconds:g} s "
        "44.1 kHz stereo song for music, through the recipe's chunked evaluation; Libri2Mix "
        "validates the recipe's `val_segment`), the test on one item (a whole Libri2Mix "
        f"utterance of 20-35 s; a {test_seconds:g} s song), export, `zoo.load`, `zoo separate` "
        "of the longest test mixture. s/step: median of the steps after the first. Peak: the "
        "main process's resident memory (VmHWM) during training and during validation; data "
        "workers not included (glibc set to keep freed memory, as for every benchmark here; each "
        "phase starts trimmed). Batch: per device, the paper's unless it does not fit this "
        "machine (then in brackets the paper's); *ckpt*: TCN blocks checkpointed "
        "(`--model.backbone.init_args.checkpoint_blocks=true`: activations recomputed in the "
        "backward pass, same values). Below the table: what does not fit "
        f"{LIMIT_GIB} GiB.",
        "",
        "| recipe | params | batch | segment s | s/step | peak train GiB | "
        "peak val GiB | val item s | test item s | separate s (file s) | recipe wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | failed (below) |" + " |" * 8 + f" {r['wall_s']:.0f} |")
            continue
        seg = r["train_shape"][-1] / r["sample_rate"] if r.get("train_shape") else float("nan")
        batch = (
            r["batch"] if r["batch"] == r["paper_batch"] else f"{r['batch']} ({r['paper_batch']})"
        )
        batch = f"{batch} ckpt" if r.get("checkpointed") else batch
        lines.append(
            f"| {r['recipe']} | {r['params']:,} | {batch} | {seg:g} | "
            f"{r['s_per_step']:.2f} | {r['peak_train_gib']:.2f} | {r['peak_val_gib']:.2f} | "
            f"{r['val_item_s']:g} | {r['test_item_s']:g} | {_separate(r)} | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        f"Sum of the recipes' wall times: {report['wall_s'] / 60:.1f} min.",
        "",
        *notes(rows),
    ]
    return "\n".join(lines) + "\n"


def _separate(r: dict) -> str:
    if r["separate_s"] is None:
        return "n/a (reads the true sources)"
    return f"{r['separate_s']:.1f} ({r['separate_file_s']:g})"


def notes(rows: list[dict]) -> list[str]:
    """The recipes that do not run at paper scale within ``LIMIT_GIB``, with the measured need
    (and, where the batch was lowered, an estimate for the paper's batch: activations grow
    linearly with the batch, weights and optimiser state do not, so linear is an upper bound)."""
    out = []
    for r in rows:
        if "error" in r:
            out.append(f"- **{r['recipe']}** failed: {r['error']}.")
            continue
        peak = max(r["peak_train_gib"], r["peak_val_gib"], r.get("peak_test_gib") or 0)
        phase = "training" if r["peak_train_gib"] >= r["peak_val_gib"] else "validation"
        if r["batch"] != r["paper_batch"]:
            need = r["peak_train_gib"] * r["paper_batch"] / r["batch"]
            how = ", TCN blocks checkpointed" if r.get("checkpointed") else ""
            out.append(
                f"- **{r['recipe']}** does not fit {LIMIT_GIB} GiB at the paper's batch: "
                f"measured {r['peak_train_gib']:.1f} GiB in training at batch {r['batch']}{how} "
                "(the paper's "
                f"{r['paper_batch']} would need up to ~{need:.0f} GiB, beyond this machine). On "
                "GPUs: a per-device batch that fits, the global batch made up by devices x "
                "nodes or `--trainer.accumulate_grad_batches`."
            )
        elif peak > LIMIT_GIB:
            how = ", TCN blocks checkpointed" if r.get("checkpointed") else ""
            out.append(
                f"- **{r['recipe']}** does not fit {LIMIT_GIB} GiB at the paper's batch "
                f"{r['paper_batch']}{how}: measured {peak:.1f} GiB peak ({phase})."
            )
    return out


def write_section(path: Path, section: str) -> None:
    from benchmarks.run import update_section

    update_section(path, TITLE, section)


def main() -> int:
    from zoo.run.recipe import available_recipes

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="*", default=None, help="default: all")
    p.add_argument("--out", default="rehearse", help="work folder and report.json")
    p.add_argument("--song-seconds", type=float, default=180.0)
    p.add_argument("--test-seconds", type=float, default=15.0)
    p.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--roots", help=argparse.SUPPRESS)
    a = p.parse_args()
    out = Path(a.out).resolve()
    if a.one:
        result = one(a.one, a.roots, out / "work" / a.one)
        (out / "work" / a.one / "result.json").write_text(json.dumps(result, indent=1))
        return 0
    names = a.recipes or available_recipes()
    unknown = sorted(set(names) - set(available_recipes()))
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}: `zoo recipes` lists them")
    t0 = time.perf_counter()
    roots = make_data(out / "data", a.song_seconds, a.test_seconds)
    print(f"[rehearse] data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rows, failed = [], []
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**MALLOC, **os.environ, "PYTHONPATH": path}
    roots_json = json.dumps({k: str(v) for k, v in roots.items()})
    for name in names:
        work = out / "work" / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--out",
            str(out),
            "--one",
            name,
            "--roots",
            roots_json,
        ]
        t1 = time.perf_counter()
        run = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
        (work / "log.txt").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1][:200]
            if run.returncode < 0:  # no traceback: the process was killed
                sig = signal.Signals(-run.returncode).name
                why = ": the kernel's out-of-memory killer, most likely" if sig == "SIGKILL" else ""
                last = f"killed by {sig}{why}"
            wall = round(time.perf_counter() - t1, 1)
            rows.append({"recipe": name, "error": last, "wall_s": wall})
            failed.append(name)
            print(f"[rehearse] {name}: FAILED ({last}); log in {work / 'log.txt'}", flush=True)
            continue
        rows.append(json.loads((work / "result.json").read_text()))
        r = rows[-1]
        print(
            f"[rehearse] {name}: {r['s_per_step']:.2f} s/step, peak train "
            f"{r['peak_train_gib']:.2f} GiB / val {r['peak_val_gib']:.2f} GiB, val item "
            f"{r['val_item_s']:g} s, {time.perf_counter() - t1:.0f} s",
            flush=True,
        )
    # the table's source is tracked beside this script, so that a subset re-run on a fresh
    # clone keeps the other recipes' rows (rehearse/ itself is not tracked)
    previous = TRACKED if TRACKED.exists() else out / "report.json"
    if a.recipes and previous.exists():  # a subset re-run: the other recipes' rows are kept
        old = json.loads(previous.read_text())
        if (old["song_seconds"], old["test_seconds"]) == (a.song_seconds, a.test_seconds):
            kept = {r["recipe"]: r for r in old["rows"]} | {r["recipe"]: r for r in rows}
            rows = [kept[n] for n in available_recipes() if n in kept]
    report = {
        "song_seconds": a.song_seconds,
        "test_seconds": a.test_seconds,
        "rows": rows,
        "wall_s": round(sum(r.get("wall_s") or 0 for r in rows), 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    if not a.no_write:
        TRACKED.write_text(json.dumps(report, indent=1) + "\n")
        write_section(Path(a.benchmarks), render(report))
    print(
        f"[rehearse] {len(names) - len(failed)}/{len(names)} recipes passed in "
        f"{time.perf_counter() - t0:.0f} s; report {out / 'report.json'}",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
