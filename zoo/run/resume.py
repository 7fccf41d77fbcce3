"""What makes ``zoo recipe NAME --resume`` end where the uninterrupted run ends.

* The checkpoint is read before anything else (:func:`check_checkpoint`): a truncated or foreign
  ``last.ckpt`` is one line naming the file, not torch's traceback.
* The resumed run must be the same run (:func:`compare_configs`): its resolved configuration is
  compared with the one the run saved when it started (LightningCLI's ``config.yaml``); any
  difference but the training budget (``trainer.max_epochs``, ``trainer.max_steps``, which a
  user legitimately extends) is refused in one line naming the key, both values and
  ``--fresh``. Budget changes are returned, so the results record them.
* The resumed run logs into the run's own logger version (:func:`pin_log_version`), so that the
  best-checkpoint callback finds the checkpoints and the best score it had before the kill (it
  restores its state only for the same folder) and tests the same checkpoint an uninterrupted run
  tests.
"""

from __future__ import annotations

import re
from pathlib import Path

from .folders import UnfinishedRunError

__all__ = [
    "BUDGET_KEYS",
    "ResumeMismatchError",
    "check_checkpoint",
    "compare_configs",
    "pin_log_version",
    "prepare_resume",
    "saved_config",
]

BUDGET_KEYS = ("trainer.max_epochs", "trainer.max_steps")
WHERE_KEYS = ("trainer.default_root_dir",)  # where the run folder is, not how it trains


class ResumeMismatchError(UnfinishedRunError):
    """``--resume`` with settings that differ from the run being resumed."""


def check_checkpoint(path: Path, name: str) -> None:
    """Read ``path`` as a checkpoint of ours (weights only: no code is unpickled) or refuse in
    one line with what to do."""
    import pickle
    import zipfile

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        kind = (
            "not a checkpoint of ours (it holds objects that are not plain tensors and numbers)"
            if "weights_only" in str(exc) or isinstance(exc, pickle.UnpicklingError)
            else f"unreadable ({why})"
        )
        raise UnfinishedRunError(
            f"{path} is {kind}: it cannot be resumed; start anew with `zoo recipe {name} --fresh` "
            "(the unfinished run then moves to the archive)"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UnfinishedRunError(
            f"{path} is not a Lightning checkpoint (no state_dict): it cannot be resumed; start "
            f"anew with `zoo recipe {name} --fresh`"
        )


def saved_config(ckpt: Path, run_dir: Path) -> dict | None:
    """The configuration the run saved when it started: ``config.yaml`` of the logger version
    that holds ``ckpt``, else the newest one in the run folder."""
    import yaml

    version = next((p for p in ckpt.parents if re.fullmatch(r"version_\d+", p.name)), None)
    candidates = [version / "config.yaml"] if version else []
    candidates += sorted(run_dir.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)[::-1]
    for path in candidates:
        if path.is_file():
            return yaml.safe_load(path.read_text())
    return None


def _flat(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def compare_configs(saved: dict, new: dict, name: str) -> dict:
    """Refuse a resumed run whose configuration differs from the saved one but for the
    budget; returns the budget changes ``{key: [saved, new]}``."""
    a, b = _flat(saved), _flat(new)
    budget = {}
    for key in sorted(set(a) | set(b)):
        old, now = a.get(key, "<unset>"), b.get(key, "<unset>")
        if old == now or key in WHERE_KEYS:
            continue
        if key in BUDGET_KEYS:
            budget[key] = [old, now]
            continue
        raise ResumeMismatchError(
            f"--resume with {key}={now!r}, but the run being resumed has {key}={old!r}: resume "
            f"it with the settings it started with (only {', '.join(BUDGET_KEYS)} may change), "
            f"or start anew with `zoo recipe {name} --fresh`"
        )
    return budget


def pin_log_version(trainer, ckpt: Path) -> None:
    """Log the resumed run into the logger version its checkpoint came from (Lightning's
    loggers otherwise open the next version)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    version = next((p for p in ckpt.parents if re.fullmatch(r"version_\d+", p.name)), None)
    if version is None:
        return
    loggers = []
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger | TensorBoardLogger):
            logger = type(logger)(save_dir=logger.save_dir, name=logger.name, version=version.name)
        loggers.append(logger)
    trainer.loggers = loggers


def prepare_resume(run, checkpoint: Path, built) -> dict:
    """Before a resumed fit: the checkpoint readable, the same configuration but for the budget
    (returned), the run's own logger version."""
    check_checkpoint(checkpoint, run.recipe.name)
    saved = saved_config(checkpoint, run.dir)
    budget = compare_configs(saved, built.resolved_config(), run.recipe.name) if saved else {}
    pin_log_version(built.trainer, checkpoint)
    return budget
