"""Results files: ``metrics.json`` (the leaderboard's only input) and a per-item CSV.

Test results flow one way: ``SeparationSystem.test_step`` returns one row per item, the
:class:`ResultsWriter` callback gathers them from every DDP rank and writes the files; callers
read ``metrics.json`` back (:func:`read_results`).
"""

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

from ..backbones.capabilities import NeedsSources, TestProtocol
from ..data.mini import is_mini_dataset
from ..eval.metrics import DEFINITIONS, summarize_bss

__all__ = ["ResultsWriter", "git_sha", "read_results", "write_json_atomic"]

PACKAGE = Path(__file__).resolve().parents[1]


def git_sha() -> str | None:
    """The commit of the code that ran (``+dirty`` when the package's tracked files differ from
    it; results files and data do not count); ``None`` outside a git checkout."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=PACKAGE, capture_output=True, text=True, check=True
        ).stdout.strip()
        sha = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".")
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_results(out_dir: str | Path) -> dict:
    """The ``metrics.json`` of a results folder."""
    return json.loads((Path(out_dir) / "metrics.json").read_text())


def first_row_keys(rows: list[dict]) -> set[str]:
    """The metric names the rows hold (``sdr_vocals`` -> ``sdr``)."""
    keys = set(rows[0]) if rows else set()
    return {"si_sdr"} | {k.split("_")[0] for k in keys if k.startswith(("sdr_", "usdr_"))}


def _reference_protocols(rows: list[dict]) -> dict:
    """Means over items of the labelled reference protocols' columns (``oracle_stitch_*``)."""
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("oracle_stitch_")]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


class ResultsWriter(L.Callback):
    """Gathers the test rows of every rank and writes ``<out_dir>/metrics.json`` and
    ``test_items.csv`` at the end of ``trainer.test`` (rank 0).

    Args:
        out_dir: folder for the results (one run per folder).
        recipe: recipe name recorded in the results.
        extra: anything else to record (e.g. the model evaluated).

    Results on the built-in mini data (a root holding the mini marker file) carry
    ``"mini": true``.
    """

    def __init__(self, out_dir: str = "results/run", recipe: str | None = None, extra=None):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.recipe, self.extra = recipe, dict(extra or {})
        self.started = time.time()
        self._rows: list[dict] = []
        self._timing = [0.0, 0.0]  # separation seconds, audio seconds

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._rows, self._timing = [], [0.0, 0.0]

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._rows += outputs["rows"]
        self._timing[0] += outputs["seconds"]
        self._timing[1] += outputs["audio_seconds"]

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:  # every rank scored other items: gather them
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (self._rows, self._timing))
            self._rows = [r for rows, _ in gathered for r in rows]
            self._timing = [sum(t[i] for _, t in gathered) for i in (0, 1)]

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
        rows = sorted(self._rows, key=lambda r: r["id"])
        dm = trainer.datamodule
        data = dm.describe()
        mini = is_mini_dataset(data["root"])
        backbone = pl_module.backbone
        protocol = backbone.test_protocol if isinstance(backbone, TestProtocol) else {}
        seconds, audio = self._timing
        result = {
            "recipe": self.recipe,
            **data,
            "mini": mini,
            "data_source": "built-in mini dataset (synthetic)" if mini else data.get("root"),
            "n_items": len(rows),
            # the metric its datamodule ranks by, with its label (the leaderboard's order)
            "headline_metric": list(dm.headline_metric),
            "si_sdr": metrics.get("test/si_sdr"),
            "si_sdri": metrics.get("test/si_sdri"),
            **(
                {"sdr": metrics["test/sdr"], "sdri": metrics["test/sdri"]}
                if "test/sdr" in metrics
                else {}
            ),
            # music: BSS Eval v4 (museval's numbers) and the full-track SDR, per target and
            # averaged over targets; every SDR key named by its definition
            **summarize_bss(rows, pl_module.target_names(trainer.datamodule.n_src)),
            "metric_definitions": {
                k: DEFINITIONS[k] for k in ("sdr", "usdr", "si_sdr") if k in first_row_keys(rows)
            },
            # blind: the model's own output order; oracle: the references were used
            "protocol": "oracle" if isinstance(backbone, NeedsSources) else "blind",
            **({"test_protocol": protocol} if protocol else {}),
            **_reference_protocols(rows),
            "backbone": f"{type(backbone).__module__}.{type(backbone).__name__}",
            "architecture": backbone.architecture,
            "n_src": backbone.n_src,
            # more outputs than references: which of them were scored
            **(
                {
                    "outputs_scored": f"the best-matching {dm.n_src} of {backbone.n_src} outputs "
                    "per item (PIT on SI-SDR)"
                }  # fmt: skip
                if backbone.n_src > dm.n_src and not backbone.ordered
                else {}
            ),
            "loss": type(pl_module.loss).__name__,
            "params": sum(p.numel() for p in backbone.parameters()),
            # separation time in the test loop over audio duration, on this machine
            "rtf": round(seconds / audio, 5) if audio else None,
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
        write_json_atomic(self.out_dir / "metrics.json", result)
        if rows:
            tmp = self.out_dir / "test_items.csv.tmp"
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, self.out_dir / "test_items.csv")
