"""Learning curves of chunked (AudioSlots) runs: validation SI-SDRi against training steps,
blind (the model's own clip stitching, the test headline), oracle stitch (each clip's outputs
ordered by the references: the AudioSlots paper's protocol) and per clip (each clip scored on
its own with PIT), read from the runs' Lightning CSV logs.

    python benchmarks/learning_curve.py --run "label=results/.../lightning_logs/version_0" ... \\
        --out benchmarks/audioslots-curves

writes ``<out>.json`` (the curves, so the figure can be redrawn without the runs) and
``<out>.png``; ``--from-json <out>.json`` redraws from the JSON alone.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

KEYS = {
    "val/si_sdri": "blind",
    "val/oracle_stitch_si_sdri": "oracle stitch",
    "val/clip_si_sdri": "per clip",
}


def read_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric label: [(step, value)]}`` from a Lightning CSV log folder (or its file)."""
    path = log_dir if log_dir.suffix == ".csv" else log_dir / "metrics.csv"
    curves: dict[str, list[tuple[int, float]]] = {label: [] for label in KEYS.values()}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, label in KEYS.items():
                if row.get(key):
                    curves[label].append((int(row["step"]), float(row[key])))
    return curves


def draw(runs: dict[str, dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True, layout="constrained")
    for ax, label in zip(axes, KEYS.values(), strict=True):
        for name, curves in runs.items():
            pts = curves.get(label) or []
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{label} SI-SDRi (validation)", fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dB (mini dev set)")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle("AudioSlots on the built-in mini Libri2Mix (synthetic; 2-core CPU)", fontsize=11)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", default=[], help="label=path to a CSV log folder")
    p.add_argument("--from-json", default=None, help="redraw from a JSON this script wrote")
    p.add_argument("--out", default="benchmarks/audioslots-curves")
    a = p.parse_args()
    out = Path(a.out)
    if a.from_json:
        runs = json.loads(Path(a.from_json).read_text())
    else:
        runs = {}
        for item in a.run:
            label, _, path = item.partition("=")
            runs[label] = read_curves(Path(path))
        out.with_suffix(".json").write_text(json.dumps(runs, indent=1) + "\n")
    draw(runs, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
