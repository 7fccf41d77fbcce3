"""One-shot GPU check: every recipe's paper configuration, fp32 and bf16, on one GPU and on all
GPUs (DDP); validation metrics on 1 and N GPUs; the BSS Eval v4 kernel on the GPU.

Usage::

    make gpu-check            # on a CUDA machine: writes gpu-check/report.json and report.md
    make gpu-check DRY=1      # CPU, tiny sizes, the same code path (the test suite runs it)

What it measures (README, "GPU check", says how to read the report):

- ``train``: per recipe and precision, Lightning fits the recipe's system (paper network, loss,
  optimiser) on synthetic batches of the recipe's per-device batch size and segment length:
  seconds per step and samples per second after warm-up steps, and the peak GPU memory
  (``torch.cuda.max_memory_allocated``; the CPU has no allocator statistics: null).
- ``ddp``: the same on all GPUs (Lightning's DDP, one process per GPU, per-device batch
  unchanged): the scaling efficiency is the single-GPU step time over the DDP step time (1.0:
  perfect; the global batch is N times larger).
- ``validation``: the libri2mix_pit mini system (fixed random weights) validated on the same
  generated items on 1 and on N devices: the SI-SDR means must agree (to 1e-4 dB).
- ``bss_eval``: one 4-minute 44.1 kHz stereo track with 4 targets: zoo.eval.bsseval on the GPU
  against the same kernel on the CPU (max abs difference of every framewise metric, dB) and
  museval (time).

Dry mode: the CPU, mini networks, 2 steps, batches of 2 of the mini recipes' segments, 2 CPU
processes for DDP (gloo, first recipe only), a 10 s track.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_LIBRI = dict(n_train=16, n_dev=4, n_test=2, speakers_train=4, speakers_dev=2,
                  speakers_test=2, utterances_per_speaker=2)  # fmt: skip
TINY_MUSDB = dict(n_train=2, n_valid=1, n_test=1, seconds=2.0, with_stempeg_example=False)


def tiny_data(base: Path) -> dict[str, Path]:
    """Small generated sets in the real formats: they give each recipe's batch structure."""
    from zoo.data.mini import MiniSpec, prepare_libri2mix_mini
    from zoo.data.musdb_mini import MusdbMiniSpec, prepare_musdb18_mini

    return {
        "libri2mix-mini": prepare_libri2mix_mini(base / "Libri2Mix", MiniSpec(**TINY_LIBRI)),
        "musdb18-mini": prepare_musdb18_mini(base / "MUSDB18-HQ", MusdbMiniSpec(**TINY_MUSDB)),
    }


def build(name: str, dry: bool, data: dict[str, Path], results: Path):
    """The recipe's system (paper configuration, or mini when dry), one batch of its own loader
    (the structure: keys, sources, channels) and its per-device batch size and segment."""
    from zoo.run.build import build, resolve
    from zoo.run.recipe import load_recipe

    root = data[load_recipe(name).mini_dataset]
    mini_cli = build(resolve(name, results=results, mini_root_dir=root, prepare_data=False))
    dm = mini_cli.datamodule
    dm.setup("fit")
    template = next(iter(dm.train_dataloader()))
    if dry:  # the mini network on 2 items of the mini recipe's segment
        system, batch_size, segment = mini_cli.model, 2, dm.segment
    else:
        paper = build(resolve(name, data=str(root), results=results, prepare_data=False))
        system = paper.model
        batch_size, segment = paper.datamodule.batch_size, paper.datamodule.segment
    system.input_stats_batches = 0  # no datamodule here: statistics stay at their init
    return system, template, int(batch_size), float(segment)


class Synthetic(torch.utils.data.Dataset):
    """Items shaped like the template batch's, ``samples`` long: noise of speech-like level."""

    def __init__(self, template: dict, samples: int, length: int = 10_000):
        g = torch.Generator().manual_seed(0)
        self.item, self.length = {}, length
        for k, v in template.items():
            if torch.is_tensor(v) and v.is_floating_point() and v.ndim >= 2:
                shape = (*v.shape[1:-1], samples)
                self.item[k] = 0.05 * torch.randn(shape, generator=g)
            elif torch.is_tensor(v):
                self.item[k] = v[0]
        if "ref" in self.item and "mix" in self.item and self.item["ref"].ndim == 3:
            self.item["mix"] = self.item["ref"].sum(0)  # a mixture of its references

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.item


class StepTimer(L.Callback):
    """Time and peak memory of the steps after ``warmup``."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start, self.seconds, self.steps, self.peak = 0.0, 0.0, 0, None

    def on_train_batch_start(self, trainer, module, batch, idx):
        if trainer.global_step == self.warmup:
            _sync(module.device)
            if module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        _sync(module.device)
        self.seconds = time.perf_counter() - self.start
        self.steps = trainer.global_step - self.warmup
        if module.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(module.device) / 2**30

    def result(self) -> dict:
        step = self.seconds / max(1, self.steps)
        return {"s_per_step": round(step, 4), "peak_gib": self.peak and round(self.peak, 3)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(name, dry, data, results, precision, devices, steps, warmup, accelerator, out=None):
    """Fit ``warmup + steps`` steps; returns seconds per step, samples/s, peak GiB."""
    torch.manual_seed(0)
    system, template, batch_size, segment = build(name, dry, data, results)
    samples = int(round(segment * system.backbone.sample_rate))
    loader = torch.utils.data.DataLoader(
        Synthetic(template, samples), batch_size=batch_size, num_workers=0
    )
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=results,
    )
    trainer.fit(system, train_dataloaders=loader)
    res = timer.result()
    res.update(batch=batch_size, segment_s=segment, devices=devices, precision=precision)
    res["samples_per_s"] = round(devices * batch_size / res["s_per_step"], 2)
    if out is not None and trainer.is_global_zero:  # a DDP worker: rank 0 reports
        out.write_text(json.dumps(res))
    return res


def validate(dry, data, results, devices, accelerator, out=None):
    """val/si_sdr of the libri2mix_pit mini system (seeded random weights) on the tiny dev set."""
    from zoo.run.build import build, resolve

    torch.manual_seed(0)
    cli = build(
        resolve("libri2mix_pit", results=results, mini_root_dir=data["libri2mix-mini"],
                prepare_data=False)
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=results,
    )
    metrics = trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    res = {"devices": devices, "si_sdr": float(metrics["val/si_sdr"])}
    if out is not None and trainer.is_global_zero:
        out.write_text(json.dumps(res))
    return res


def worker(args) -> None:
    """A DDP measurement in its own process: Lightning's DDP re-runs this command per rank."""
    data = tiny_data(Path(args.data_dir))
    results = Path(args.data_dir) / "runs"
    if args.worker == "train":
        train(args.recipe, args.dry, data, results, args.precision, args.devices, args.steps,
              args.warmup, args.accelerator, Path(args.result))  # fmt: skip
    else:
        validate(args.dry, data, results, args.devices, args.accelerator, Path(args.result))
    if torch.distributed.is_initialized():  # left to the exit, gloo's threads may abort a rank
        torch.distributed.destroy_process_group()


def ddp(kind: str, args, n: int, base: Path, **kw) -> dict:
    """Run a DDP measurement over ``n`` devices in a subprocess; its rank 0's result."""
    result = base / f"ddp-{kind}-{kw.get('recipe', 'val')}-{kw.get('precision', '')}.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--data-dir", str(base), "--devices",
           str(n), "--accelerator", args.accelerator, "--result", str(result),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    cmd += ["--dry"] if args.dry else []
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if run.returncode != 0 or not result.is_file():
        return {"error": (run.stderr or run.stdout)[-800:]}
    return json.loads(result.read_text())


def bss_eval(seconds: float, device: str, museval_too: bool) -> dict:
    """The BSS Eval v4 kernel on ``device`` against the CPU and museval on one track."""
    import numpy as np

    from zoo.eval.bsseval import METRICS, bss_eval_v4

    rng = np.random.default_rng(0)
    n = int(seconds * 44100)
    ref = rng.standard_normal((4, n, 2)) * 0.1
    est = ref + 0.05 * rng.standard_normal((4, n, 2))
    res = {"track_s": seconds}
    t = time.perf_counter()
    cpu = bss_eval_v4(ref, est)
    res["cpu_s"] = round(time.perf_counter() - t, 3)
    if device != "cpu":
        bss_eval_v4(ref[:, : 5 * 44100], est[:, : 5 * 44100], device=device)  # warm-up
        _sync(torch.device(device))
        t = time.perf_counter()
        dev = bss_eval_v4(ref, est, device=device)
        _sync(torch.device(device))
        res["gpu_s"] = round(time.perf_counter() - t, 3)
        res["max_abs_diff_db"] = max(float(np.nanmax(np.abs(dev[k] - cpu[k]))) for k in METRICS)
    if museval_too:
        from zoo.data.musdb18 import require_ffmpeg

        require_ffmpeg("museval")  # it needs ffmpeg even to be imported
        import museval

        t = time.perf_counter()
        museval.evaluate(ref, est, win=44100, hop=44100, mode="v4")
        res["museval_s"] = round(time.perf_counter() - t, 3)
    return res


def render(report: dict) -> str:
    lines = [
        "# GPU check",
        "",
        f"{report['machine']}; {'DRY RUN (CPU, tiny sizes: not GPU figures)' if report['dry'] else 'paper configurations'}; "  # noqa: E501
        f"{report['steps']} timed steps after {report['warmup']} warm-up steps.",
        "",
        "| recipe | precision | devices | batch/device | segment s | s/step | samples/s | peak GiB | DDP efficiency |",  # noqa: E501
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["train"]:
        if "error" in r:
            why = r["error"].strip().splitlines()[-1][:120] if r["error"].strip() else "?"
            lines.append(f"| {r['recipe']} | {r['precision']} | {r.get('devices')} | {why} |||||")
            continue
        eff = r.get("efficiency")
        lines.append(
            f"| {r['recipe']} | {r['precision']} | {r['devices']} | {r['batch']} | "
            f"{r['segment_s']} | {r['s_per_step']} | {r['samples_per_s']} | "
            f"{r['peak_gib'] if r['peak_gib'] is not None else 'n/a'} | "
            f"{eff if eff is not None else ''} |"
        )
    v = report["validation"]
    lines += ["", f"Validation SI-SDR of the same items: {json.dumps(v)}"]
    lines += ["", f"BSS Eval v4: {json.dumps(report['bss_eval'])}", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes, same code path")
    p.add_argument("--out", default="gpu-check", help="report folder")
    p.add_argument("--recipes", nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    # worker mode (internal): one DDP measurement
    p.add_argument("--worker", choices=["train", "validate"])
    p.add_argument("--data-dir")
    p.add_argument("--recipe")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--accelerator", default=None)
    p.add_argument("--result")
    args = p.parse_args()
    args.steps = args.steps or (2 if args.dry else 20)
    args.warmup = args.warmup or (1 if args.dry else 5)
    if args.worker:
        worker(args)
        return
    from zoo.run.recipe import available_recipes

    cuda = torch.cuda.is_available() and not args.dry
    if not cuda and not args.dry:
        sys.exit("gpu_check: no CUDA GPU here; `make gpu-check DRY=1` runs the dry check on CPU")
    args.accelerator = "gpu" if cuda else "cpu"
    n_dev = torch.cuda.device_count() if cuda else 2  # dry: 2 CPU processes (gloo)
    precisions = ["32-true", "bf16-mixed"]
    recipes = args.recipes or available_recipes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    machine = (
        f"{n_dev} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        if cuda
        else f"CPU, torch {torch.__version__}"
    )
    report = {"machine": machine, "dry": args.dry, "steps": args.steps, "warmup": args.warmup,
              "train": [], "validation": {}, "bss_eval": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = tiny_data(base)
        for name in recipes:
            for prec in precisions:
                try:
                    r = train(name, args.dry, data, base / "runs", prec, 1, args.steps,
                              args.warmup, args.accelerator)  # fmt: skip
                except Exception as exc:  # a recipe that fails is reported, the rest still run
                    r = {"error": f"{type(exc).__name__}: {exc}", "devices": 1}
                report["train"].append({"recipe": name, "precision": prec, **r})
                print(json.dumps(report["train"][-1]), flush=True)
        # DDP: every recipe in bf16 on all GPUs; dry, the first recipe on 2 CPU processes
        if n_dev > 1:
            for name in recipes[:1] if args.dry else recipes:
                single = next(
                    r
                    for r in report["train"]
                    if r["recipe"] == name and r["precision"] == "bf16-mixed"
                )
                r = {"devices": n_dev, **ddp("train", args, n_dev, base, recipe=name,
                                              precision="bf16-mixed")}  # fmt: skip
                if "error" not in r and "s_per_step" in single:
                    r["efficiency"] = round(single["s_per_step"] / r["s_per_step"], 3)
                report["train"].append({"recipe": name, "precision": "bf16-mixed", **r})
                print(json.dumps(report["train"][-1]), flush=True)
            one = validate(args.dry, data, base / "runs", 1, args.accelerator)
            many = ddp("validate", args, n_dev, base)
            report["validation"] = {"1": one, str(n_dev): many}
            if "si_sdr" in many:
                report["validation"]["equal"] = abs(one["si_sdr"] - many["si_sdr"]) < 1e-4
        else:
            report["validation"] = {"skipped": "one device: nothing to compare"}
        report["bss_eval"] = bss_eval(10.0 if args.dry else 240.0,
                                      "cuda" if cuda else "cpu", museval_too=True)  # fmt: skip
    report["wall_s"] = round(time.time() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render(report))
    print(render(report))
    failed = [r for r in report["train"] if "error" in r]
    if failed or report["validation"].get("equal") is False:
        sys.exit(f"gpu_check: {len(failed)} failed measurements or unequal validation; see {out}")


if __name__ == "__main__":
    main()
