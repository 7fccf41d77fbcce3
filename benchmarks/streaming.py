"""Streaming separation with the causal Conv-TasNet: latency and real-time factor per block size.

Usage::

    make bench-stream                # writes the "Streaming" section of BENCHMARKS.md
    python benchmarks/streaming.py --no-write

For the libri2mix_pit_causal recipe's two configurations (its mini network and the paper's
causal Conv-TasNet, N=512, L=16, B=128, H=512, X=8, R=3, cLN; random weights: the arithmetic is
the same as a trained model's) and block sizes of one hop, 10 ms, 100 ms and 12.3 ms (no
multiple of the hop), on one thread (one live stream, as a real-time process runs it):

- algorithmic latency: the basis window (an output sample needs the input up to the end of the
  frames that cover it), plus the block itself at worst (the first sample of a block waits for
  the block to fill);
- real-time factor: compute time over the audio's duration for ``--seconds`` of 8 kHz mono
  pushed block by block (median of ``--repeats`` runs); below 1 keeps up with a live input;
- the slowest push against the block's duration (a block must be done before the next one
  arrives);
- the streamed output against the offline model on the same input (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TITLE = "## Streaming (causal Conv-TasNet)"
RATE = 8000


def configs() -> dict[str, dict]:
    from zoo.run.recipe import load_recipe

    recipe = load_recipe("libri2mix_pit_causal")
    return {
        "mini": recipe.merged(True)["model"]["backbone"]["init_args"],
        "paper": recipe.merged(False)["model"]["backbone"]["init_args"],
    }


def blocks(hop: int) -> dict[str, int]:
    return {
        "1 hop": hop,
        "10 ms": RATE // 100,
        "12.3 ms": round(0.0123 * RATE),
        "100 ms": RATE // 10,
    }


def one(net, block: int, seconds: float, repeats: int) -> dict:
    import zoo

    x = torch.randn(1, int(seconds * RATE)) * 0.1
    runs, slowest, err = [], 0.0, None
    for _ in range(repeats):
        s = zoo.stream(net)
        outs, t0 = [], time.perf_counter()
        for i in range(0, x.shape[-1], block):
            t = time.perf_counter()
            outs.append(s.push(x[:, i : i + block]))
            slowest = max(slowest, time.perf_counter() - t)
        outs.append(s.flush())
        runs.append(time.perf_counter() - t0)
        if err is None:
            with torch.inference_mode():
                ref = net(x[None])[0]
            err = float((torch.cat(outs, -1) - ref).abs().max())
    return {
        "block": block,
        "block_ms": 1000 * block / RATE,
        "rtf": statistics.median(runs) / seconds,
        "slowest_push_ms": 1000 * slowest,
        "max_abs_diff": err,
        "seconds": seconds,
    }


def render(rows: list[dict], repeats: int) -> str:
    lines = [
        TITLE,
        "",
        "`make bench-stream` (benchmarks/streaming.py): `zoo.stream` on the libri2mix_pit_causal "
        "recipe's networks (random weights), 8 kHz mono pushed block by block on **one thread** "
        f"of this 2-core CPU VM; RTF = compute time / audio duration, median of {repeats} runs; "
        "latency = the basis window (algorithmic) + the block (worst case, the block's first "
        "sample). Streamed vs offline: max abs difference of the concatenated outputs.",
        "",
        "| config | params | block | algorithmic latency | latency with block | RTF | slowest push "
        "| streamed vs offline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['params'] / 1e6:.2f} M | {r['name']} ({r['block']} samples) "
            f"| {r['latency_ms']:.1f} ms | {r['latency_ms'] + r['block_ms']:.1f} ms "
            f"| {r['rtf']:.3f} | {r['slowest_push_ms']:.1f} ms (block {r['block_ms']:.1f} ms) "
            f"| {r['max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "An RTF below 1 keeps up with a live input on one core; a slowest push longer than its "
        "block means that block arrived late at least once (the first push also builds the "
        "caches). Each push has a fixed cost besides its samples (the per-block RTF x block "
        "length: about 6 ms for the paper network at one hop), so the RTF falls "
        "as the block grows while the latency rises with it.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    from benchmarks.run import update_section
    from zoo.backbones import ConvTasNet

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="audio per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    a = p.parse_args()
    torch.set_num_threads(1)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        print("note: run through `make bench-stream` for the benchmarks' malloc settings")
    rows = []
    for config, args in configs().items():
        torch.manual_seed(0)
        net = ConvTasNet(**args).eval()
        params = sum(p.numel() for p in net.parameters())
        for name, block in blocks(net.stride).items():
            # one hop of the paper network is 8 samples: 10 s would take minutes, 2 s says it
            seconds = min(a.seconds, 2.0) if block < RATE // 100 else a.seconds
            row = one(net, block, seconds, a.repeats)
            row.update(
                config=config,
                name=name,
                params=params,
                latency_ms=1000 * net.kernel_size / RATE,
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    section = render(rows, a.repeats)
    print(section)
    if not a.no_write:
        update_section(Path(a.benchmarks), TITLE, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
