"""The choreography of a run folder, in one place: :func:`run_session`.

Global rank 0 takes the folder's lock, checks for an unfinished run (resume it, start anew, or
refuse), tells the ranks started with it to go on (:mod:`zoo.run.launch`), and, when the block
inside ends without an error, swaps the finished run into the results folder
(:meth:`RunFolder.commit`). The other ranks only wait for rank 0 and never touch the folder. A
run that fails before its first checkpoint leaves nothing behind (its staged folder held only
what it wrote); one that fails later stays for ``--resume``. SIGTERM becomes
:class:`~zoo.run.checkpoints.Interrupted` (exit status 143) with what to do next.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..system import leave_process_group
from .checkpoints import Interrupted, last_checkpoint
from .folders import UnfinishedRunError
from .launch import announce, is_ddp_worker, wait_for_rank_zero, withdraw

__all__ = ["Session", "run_session"]


@dataclass
class Session:
    """What the block inside :func:`run_session` is told, and what it leaves.

    Attributes:
        rank_zero: this process owns the folder (global rank 0).
        checkpoint: the checkpoint to resume from (``--resume``), else ``None``.
        previous: after the commit, where the previous results went (``None``: there were
            none).
    """

    rank_zero: bool
    checkpoint: Path | None = None
    previous: Path | None = None


@contextmanager
def run_session(run, resume: bool = False, fresh: bool = False) -> Iterator[Session]:
    """Hold ``run``'s folder for the block inside (see the module docstring).

    Args:
        run: a :class:`zoo.run.build.Run`.
        resume: continue the unfinished run from its last checkpoint.
        fresh: move an unfinished run to the archive and start anew.
    """
    if resume and fresh:
        raise ValueError("--resume and --fresh exclude each other: choose one")
    if is_ddp_worker():  # ranks started with rank 0 (torchrun, srun) wait until it holds the folder
        wait_for_rank_zero(run.dir)
        session = Session(False, last_checkpoint(run.dir) if resume else None)
        try:
            with _sigterm(run, session):
                yield session
        finally:
            leave_process_group()  # before exit: gloo threads left to it abort the rank
        return
    run.folder.acquire()
    try:
        run.folder.check_replaceable()  # a results folder zoo did not write: refused, untouched
        _check_unfinished(run, resume, fresh)
        run.folder.mark_stage("evaluate" if run.evaluate else "recipe")
        announce(run.dir)
        session = Session(True, last_checkpoint(run.dir) if resume else None)
        try:
            with _sigterm(run, session):
                yield session
        except BaseException:
            # failed before its first checkpoint (bad data path, a crash): nothing to resume, so
            # the staged folder, which holds only what this run wrote, goes
            if last_checkpoint(run.dir) is None:
                shutil.rmtree(run.dir, ignore_errors=True)
            raise
        withdraw(run.dir)
        session.previous = run.folder.commit()
    finally:
        withdraw(run.dir)
        run.folder.release()
        leave_process_group()  # before exit: gloo threads left to it abort the rank


@contextmanager
def _sigterm(run, session: Session) -> Iterator[None]:
    """SIGTERM (Lightning's exception for it) as :class:`Interrupted`, saying what is left."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        yield
    except SIGTERMException as exc:
        name = run.recipe.name
        if run.evaluate:
            raise Interrupted(f"{name}: evaluation stopped by SIGTERM; nothing was written: "
                              "run the same command again") from exc  # fmt: skip
        saved = last_checkpoint(run.dir)
        where = f"checkpoint saved at {saved}" if saved else "no checkpoint could be saved"
        raise Interrupted(
            f"{name}: stopped by SIGTERM, {where}; continue with `zoo recipe {name} --resume` "
            "(make recipe NAME=... RESUME=1)"
        ) from exc


def _check_unfinished(run, resume: bool, fresh: bool) -> None:
    name = run.recipe.name
    if run.folder.unfinished() and run.folder.stage_kind() == "evaluate":
        run.folder.remove_stage()  # an evaluation's leftovers: nothing there to resume
    if run.evaluate:
        if run.folder.unfinished():  # a recipe run waiting for --resume: never touched
            raise UnfinishedRunError(
                f"an unfinished run waits in {run.dir} for `zoo recipe {run.out.name} --resume`: "
                "evaluate into another folder (-o), or finish that run first"
            )
        return
    if run.folder.unfinished():
        if fresh:
            print(f"[zoo] unfinished run moved to {run.folder.archive_unfinished()}", flush=True)
        elif not resume:
            ckpt = last_checkpoint(run.dir)
            state = f"last checkpoint {ckpt}" if ckpt else "no checkpoint yet"
            raise UnfinishedRunError(
                f"an unfinished run of {name} is in {run.dir} ({state}): continue it with "
                f"`zoo recipe {name} --resume`, or start anew with `zoo recipe {name} --fresh` "
                "(the unfinished run then moves to the archive)"
            )
        elif last_checkpoint(run.dir) is None:
            raise UnfinishedRunError(
                f"the unfinished run of {name} in {run.dir} has no checkpoint to resume from: "
                f"start anew with `zoo recipe {name} --fresh`"
            )
    elif resume:
        raise UnfinishedRunError(f"no unfinished run of {name} in {run.dir} to resume")
