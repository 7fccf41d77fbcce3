"""Data loading throughput at the paper settings against the training step: how many loader
workers a GPU needs.

Usage::

    make bench-data                  # every recipe; writes the "Data loading throughput"
                                     # section of BENCHMARKS.md
    python benchmarks/data_throughput.py --recipes musdb18_umx --no-write

Per recipe, its paper datamodule (the recipe's segment, augmentations and batch) on the
rehearsal's generated data (``make rehearse``'s: Libri2Mix mixtures of 20-35 s utterances at 8 and
16 kHz, 180 s 44.1 kHz stereo MUSDB18-HQ songs; the same on-disk formats as the real sets, read by
the same code): training items drawn in one thread, as one loader worker draws them (items/s per
worker: median of ``--repeats`` timed runs of ``--items`` items). MUSDB18 is timed with the
recipe's augmentations (sources from random tracks, random gains, channel swap) and without them.

The step time a worker has to keep up with is a **FLOP estimate**, not a measurement: the
forward FLOPs of one training item through the paper network (``torch.utils.flop_counter``),
times 3 for forward + backward, times the batch, at an assumed sustained ``--gpu-tflops`` (default
15.7 TFLOP/s x 0.3 = 4.7 TFLOP/s: the V100's fp32 peak, the papers' GPU class, at 30 %
utilisation). ``make gpu-check`` measures the real step time on a GPU; workers needed scale
with it. Workers needed = ceil(batch / step s / items per s per worker).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TITLE = "## Data loading throughput"
V100_FP32_TFLOPS = 15.7  # NVIDIA V100 SXM2 datasheet, single precision
UTILISATION = 0.3  # assumed sustained share of the peak (an assumption, stated in the report)


def _build(spec: dict, **extra):
    module, name = spec["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **extra})


def _datamodule(name: str, roots: dict[str, Path], backbone, **extra):
    from zoo.run.recipe import load_recipe

    recipe = load_recipe(name)
    config = recipe.merged(False)
    music = recipe.mini_dataset == "musdb18-mini"
    data = dict(config["data"])
    args = dict(data.get("init_args", {}))
    args.update(sample_rate=backbone.sample_rate, num_workers=0, **extra)
    if music:
        args.update(root=str(roots["music"]), setup_file="mini_setup.yaml")
    else:
        rate = "libri16000" if backbone.sample_rate == 16000 else "libri8000"
        args.update(root=str(roots[rate]), train_subset="train-100")
    dm = _build({"class_path": data["class_path"], "init_args": args})
    dm.setup("fit")
    return dm, music, config


def _librispeech_datamodule(roots: dict[str, Path], backbone, dynamic: bool):
    """The Libri2Mix datamodule reading LibriSpeech (FLAC) and LibriMix's metadata on the fly:
    4 s segments at the backbone's rate, the Conv-TasNet recipe's batch."""
    from zoo.data.libri2mix import Libri2MixDataModule

    tree = roots["librimix"]
    dm = Libri2MixDataModule(
        str(tree["librispeech"]), sample_rate=backbone.sample_rate, train_subset="train-100",
        segment=4.0, batch_size=6, metadata=str(tree["metadata"]), dynamic_mixing=dynamic,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def items_per_s(dataset, items: int, repeats: int) -> float:
    """Training items one thread draws per second (median of ``repeats`` runs)."""
    n = len(dataset)
    dataset[0]  # warm-up: file handles, lazy imports
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        for i in range(items):
            dataset[(r * items + i) % n]
        rates.append(items / (time.perf_counter() - t))
    return statistics.median(rates)


def forward_flops(build, item: dict) -> int:
    """FLOPs of one item's forward pass through a network from ``build()`` (on the meta device
    where every operation has a meta kernel, which costs nothing; on the CPU otherwise)."""
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.backbones.capabilities import NeedsSources

    mix = item["mix"][None].float()
    for device in ("meta", "cpu"):
        torch.manual_seed(0)
        model = build().to(device).train()
        args = (mix, item["ref"][None].float()) if isinstance(model, NeedsSources) else (mix,)
        counter = FlopCounterMode(display=False)
        try:
            with counter, torch.no_grad():
                model(*(a.to(device) for a in args))
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
            continue
        return counter.get_total_flops()
    raise AssertionError("unreachable")


def one(name: str, roots: dict[str, Path], items: int, repeats: int, tflops: float,
        source: str | None = None) -> dict:  # fmt: skip
    """One recipe's row; ``source``: ``on the fly`` / ``dynamic mixing`` (Libri2Mix built from
    LibriSpeech, the recipe's paper datamodule with 4 s segments)."""
    from zoo.run.recipe import load_recipe

    config = load_recipe(name).merged(False)
    torch.manual_seed(0)
    backbone = _build(config["model"]["backbone"])
    if source is None:
        dm, music, config = _datamodule(name, roots, backbone)
    else:
        dm, music = _librispeech_datamodule(roots, backbone, source == "dynamic mixing"), False
    batch = dm.batch_size
    label = name if source is None else f"{name}, {source} from LibriSpeech"
    row = {"recipe": label, "batch": batch, "segment_s": None}
    rate = items_per_s(dm.train_set, items, repeats)
    row["items_per_s"] = round(rate, 2)
    if music:
        plain, *_ = _datamodule(
            name, roots, backbone, random_track_mix=False, gain_range=None, channel_swap=False
        )
        row["items_per_s_no_aug"] = round(items_per_s(plain.train_set, items, repeats), 2)
    item = dm.train_set[0]
    row["segment_s"] = round(item["mix"].shape[-1] / backbone.sample_rate, 3)
    flops = forward_flops(lambda: _build(config["model"]["backbone"]), item)
    row["gflops_per_item_fwd"] = round(flops / 1e9, 2)
    step = 3 * flops * batch / (tflops * 1e12)
    row["step_s_est"] = round(step, 4)
    row["items_needed_per_s"] = round(batch / step, 1)
    row["workers"] = math.ceil(batch / step / rate)
    return row


def render(rows: list[dict], tflops: float, assumed: bool) -> str:
    import platform

    how = (
        f"{V100_FP32_TFLOPS} TFLOP/s (V100 fp32 peak) x {UTILISATION:.0%} assumed utilisation "
        f"= {tflops:.2f} TFLOP/s"
        if assumed
        else f"{tflops:.2f} TFLOP/s (given)"
    )
    lines = [
        TITLE,
        "",
        f"Generated by `make bench-data` (benchmarks/data_throughput.py) on "
        f"{time.strftime('%Y-%m-%d')}; {platform.machine()}, one thread per worker, torch "
        f"{torch.__version__}. Each recipe's paper datamodule (segment, augmentations, batch) on "
        "the rehearsal's generated data in the real on-disk formats (20-35 s Libri2Mix "
        "utterances, 180 s 44.1 kHz stereo MUSDB18-HQ wav songs): training items per second "
        "that one loader worker draws (CPU, this machine, files in the page cache: a cold disk "
        "or network storage reads slower). The GPU step time is an **estimate from FLOPs**, not "
        f"a measurement: 3 x forward FLOPs x batch at {how}; `make gpu-check` measures it on a "
        "GPU. Workers per GPU = ceil(items the step consumes per second / items per second per "
        "worker). For the small spectrogram networks (the U-Nets, Open-Unmix) kernel launches "
        "and the STFT, not FLOPs, set the step time, so their estimated steps are lower bounds "
        "and their worker counts upper bounds. The two `from LibriSpeech` rows build Libri2Mix "
        "items as they are read (FLAC decoding with soundfile, gains, scipy's resample_poly to "
        "8 kHz, 4 s segments: `data.init_args.metadata`) from generated LibriSpeech-layout "
        "utterances of 10-16 s, from LibriMix's fixed metadata or with dynamic mixing.",
        "",
        "| recipe | batch | segment s | items/s per worker | items/s no augmentation | "
        "forward GFLOP per item | est. GPU step s | items/s needed | workers per GPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | failed: {r['error']} |" + " |" * 7)
            continue
        no_aug = r.get("items_per_s_no_aug")
        lines.append(
            f"| {r['recipe']} | {r['batch']} | {r['segment_s']:g} | {r['items_per_s']:.1f} | "
            f"{'' if no_aug is None else f'{no_aug:.1f}'} | {r['gflops_per_item_fwd']:.1f} | "
            f"{r['step_s_est']:.3f} | {r['items_needed_per_s']:.0f} | {r['workers']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    from benchmarks.rehearse import make_data
    from benchmarks.run import update_section
    from zoo.run.recipe import available_recipes

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="*", default=None, help="default: all")
    p.add_argument("--data", default=str(REPO / "rehearse" / "data"), help="generated data")
    p.add_argument("--items", type=int, default=8, help="items per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu-tflops", type=float, default=None, help="sustained TFLOP/s")
    p.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    a = p.parse_args()
    torch.set_num_threads(1)  # one loader worker's thread
    names = a.recipes or available_recipes()
    unknown = sorted(set(names) - set(available_recipes()))
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}: `zoo recipes` lists them")
    tflops = a.gpu_tflops or V100_FP32_TFLOPS * UTILISATION
    roots = make_data(Path(a.data), 180.0, 15.0)
    tree = Path(a.data) / "librimix"
    if not (tree / "metadata").is_dir():  # LibriSpeech-length utterances (10-16 s)
        from zoo.data.librimix_mini import write_librimix_tree

        write_librimix_tree(tree, n_speakers=6, utterances=4, n_mixtures=24, seconds=(10, 16))
    roots["librimix"] = {k: tree / d for k, d in
                         (("librispeech", "LibriSpeech"), ("metadata", "metadata"))}  # fmt: skip
    runs = [(name, None) for name in names]
    if "libri2mix_pit" in names:  # the Libri2Mix paths a user without the 430 GB tree takes
        runs += [("libri2mix_pit", "on the fly"), ("libri2mix_pit", "dynamic mixing")]
    rows = []
    for name, source in runs:
        t = time.perf_counter()
        try:
            row = one(name, roots, a.items, a.repeats, tflops, source)
        except Exception as e:  # noqa: BLE001 - one recipe's failure is reported, not fatal
            row = {"recipe": name, "error": f"{type(e).__name__}: {e}"[:160]}
        rows.append(row)
        print(json.dumps(row), f"({time.perf_counter() - t:.0f} s)", flush=True)
    section = render(rows, tflops, a.gpu_tflops is None)
    print(section)
    if not a.no_write:
        update_section(Path(a.benchmarks), TITLE, section)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
