"""Results files: ``metrics.json`` (the leaderboard's only input) and a per-item CSV."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import lightning as L
import torch

from ..data.mini import is_mini_dataset

__all__ = ["ResultsWriter", "git_sha", "write_json_atomic"]


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The commit of the code that ran (``+dirty`` if the tree has uncommitted changes)."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _rtf(timing: dict | None) -> float | None:
    if not timing or not timing.get("audio_seconds"):
        return None
    return round(timing["seconds"] / timing["audio_seconds"], 5)


class ResultsWriter(L.Callback):
    """At the end of ``trainer.test``, write ``<out_dir>/metrics.json`` and ``test_items.csv``.

    Args:
        out_dir: folder for the results (one run per folder).
        recipe: recipe name recorded in the results.
        mini: whether the data is the built-in mini dataset (shown apart on the leaderboard);
            a data root holding a mini set is labelled mini whatever this says.
        extra: anything else to record (e.g. the data source).
    """

    def __init__(
        self,
        out_dir: str = "results/run",
        recipe: str | None = None,
        mini: bool = False,
        extra: dict | None = None,
    ):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.recipe, self.mini, self.extra = recipe, mini, dict(extra or {})
        self.started = time.time()
        self.last: dict | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
        rows = getattr(pl_module, "test_rows", [])
        dm = trainer.datamodule
        data = dm.describe() if hasattr(dm, "describe") else {}
        mini = self.mini or ("root" in data and is_mini_dataset(data["root"]))
        backbone = getattr(pl_module, "backbone", pl_module)
        result = {
            "recipe": self.recipe,
            **data,
            "mini": mini,
            "data_source": "built-in mini dataset (synthetic)" if mini else data.get("root"),
            "split": "test",
            "n_items": len(rows),
            "si_sdr": metrics.get("test/si_sdr"),
            "si_sdri": metrics.get("test/si_sdri"),
            **(
                {"sdr": metrics["test/sdr"], "sdri": metrics["test/sdri"]}
                if "test/sdr" in metrics
                else {}
            ),
            # music: BSS Eval v4 (museval's numbers) per target and averaged over targets
            **(getattr(pl_module, "test_summary", None) or {}),
            "backbone": f"{type(backbone).__module__}.{type(backbone).__name__}",
            "architecture": getattr(backbone, "architecture", type(backbone).__name__),
            "n_src": getattr(backbone, "n_src", None),
            "loss": type(getattr(pl_module, "loss", None)).__name__,
            "params": sum(p.numel() for p in backbone.parameters()),
            # separation time in the test loop over audio duration, on this machine
            "rtf": _rtf(getattr(pl_module, "test_timing", None)),
            "git_sha": git_sha(),
            "wall_time_s": round(time.time() - self.started, 1),
            "train_steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "world_size": trainer.world_size,
            "machine": {
                "platform": platform.platform(),
                "torch": torch.__version__,
                "cpu_threads": torch.get_num_threads(),
                "device": str(pl_module.device),
            },
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.extra,
        }
        self.last = result
        if not trainer.is_global_zero:
            return
        write_json_atomic(self.out_dir / "metrics.json", result)
        if rows:
            tmp = self.out_dir / "test_items.csv.tmp"
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(sorted(rows, key=lambda r: r["id"]))
            os.replace(tmp, self.out_dir / "test_items.csv")
