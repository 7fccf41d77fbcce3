"""Checkpoints a killed run can resume from: atomic writes, random state that resumes exactly,
and a checkpoint on SIGTERM (what SLURM, ``timeout`` and ``docker stop`` send)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data.loading import reseed_item_rng

__all__ = [
    "AtomicCheckpointIO",
    "Interrupted",
    "ResumableRandomState",
    "SaveOnSigterm",
    "last_checkpoint",
]


class Interrupted(RuntimeError):
    """The run stopped on SIGTERM after saving a checkpoint (exit status 143)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the same folder, flushed to disk, then renamed over
    the target: a full disk or a kill during the write leaves the previous checkpoint whole and
    no partial file behind."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class ResumableRandomState(L.Callback):
    """Makes a resumed run draw the same random numbers as an uninterrupted one.

    Each time a checkpoint is written, every generator the training draws from (torch, numpy,
    Python's ``random`` and the training items' generator) is re-seeded from one seed drawn from
    torch's, mixed with the DDP rank; the seed goes into the checkpoint and a resumed run
    re-seeds from it. The uninterrupted run and the resumed one therefore continue from the
    same state (in one process exactly; under DDP every rank keeps its own stream).
    """

    def __init__(self):
        self.seed: int | None = None

    @staticmethod
    def _reseed(seed: int, rank: int) -> None:
        a, b, c, d = np.random.SeedSequence([seed, rank]).generate_state(4, np.uint32)
        torch.manual_seed(int(a) << 32 | int(b))
        np.random.seed(int(c))
        random.seed(int(d))
        reseed_item_rng(int(a) ^ int(d) << 20 | int(c))

    def state_dict(self) -> dict:
        self.seed = int(torch.randint(0, 2**62, (1,)).item())
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self._reseed(self.seed, rank)
        return {"seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self._reseed(self.seed, rank)


class SaveOnSigterm(L.Callback):
    """On SIGTERM, save ``last.ckpt`` where the checkpoint callback writes it (or
    ``<default_root_dir>/last.ckpt``) before Lightning stops the run."""

    def __init__(self):
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        ckpt = trainer.checkpoint_callback
        folder = Path(ckpt.dirpath) if ckpt is not None and ckpt.dirpath else None
        path = (folder or Path(trainer.default_root_dir)) / "last.ckpt"
        if path.is_file() and getattr(ckpt, "_last_global_step_saved", None) == trainer.global_step:
            self.saved = path  # stopped right after a checkpoint (an epoch's end): keep that one
            return
        trainer.save_checkpoint(path, weights_only=False)  # the full training state
        self.saved = path


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``last.ckpt`` under a run folder (Lightning writes one per logger version), or
    the newest ``hpc_ckpt_N.ckpt`` that Lightning's SLURM environment saves before it requeues
    a preempted job, whichever is newer."""
    run_dir = Path(run_dir)
    found = [*run_dir.rglob("last.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    found.sort(key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
