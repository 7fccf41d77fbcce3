"""Results folders that are never lost: runs are staged, locked, and swapped in when finished.

A run of ``<results>/<name>`` works in ``<results>/.runs/<name>/`` (hidden: the leaderboard
ignores it) under a lock file naming its process. Only when it has finished is the previous
``<results>/<name>/`` moved to ``<results>/.archive/<name>-<time>/`` and the new one renamed into
place, so a run that fails, is killed or is refused (a typo in the data path, an unknown
override) leaves the tracked results as they were. An unfinished staged run is kept for
``--resume``.

What the tool replaces is only what it wrote: the staged folder carries a marker naming what
started it (a recipe run, or an evaluation whose leftovers hold nothing to resume), and a
finished results folder one saying it was written by zoo. A results folder without that
marker is replaced only when it holds nothing but what zoo writes (a results folder of a
fresh clone: ``metrics.json`` and ``test_items.csv``); anything else is refused, never moved.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from ..errors import UserError

__all__ = ["NotOurFolderError", "RunFolder", "RunLockedError", "UnfinishedRunError"]

STAGE_MARKER = ".zoo-stage.json"  # in a staged folder: what started it
RESULTS_MARKER = ".zoo-results.json"  # in a finished results folder: written by zoo
# what a results folder written by zoo may hold (a fresh clone has the tracked two)
OWN_FILES = {"metrics.json", "test_items.csv", "config.yaml", "model", "lightning_logs",
             RESULTS_MARKER}  # fmt: skip


class RunLockedError(UserError, RuntimeError):
    """Another live process runs into the same results folder."""


class UnfinishedRunError(UserError, RuntimeError):
    """An unfinished run is there: resume it or start afresh, explicitly."""


class NotOurFolderError(UserError, FileExistsError):
    """A results folder that zoo did not write: it is never replaced nor moved."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """The staged run folder of one results folder.

    Args:
        out: the final results folder (``<results>/<name>``).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.stage = self.out.parent / ".runs" / self.out.name
        self.lock = self.out.parent / ".runs" / f"{self.out.name}.lock"

    def acquire(self) -> None:
        """Take the lock; a lock of a dead process is taken over, a live one refused."""
        try:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise PermissionError(
                f"cannot write into {self.out.parent}: choose a writable results folder "
                "(--results, or -o for zoo evaluate)"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)}  # fmt: skip
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    held = json.loads(self.lock.read_text())
                except (OSError, json.JSONDecodeError):
                    held = {}
                same_host = held.get("host") == socket.gethostname()
                if held and (not same_host or _alive(int(held.get("pid", -1)))):
                    raise RunLockedError(
                        f"{self.out} is being written by process {held.get('pid')} on "
                        f"{held.get('host')} ({held.get('command', '?')}); wait for it to end, "
                        f"or remove {self.lock} if that process is gone"
                    ) from None
                self.lock.unlink(missing_ok=True)  # its process is gone: take over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            return
        raise RunLockedError(f"could not take the lock {self.lock}")

    def release(self) -> None:
        try:
            if json.loads(self.lock.read_text()).get("pid") == os.getpid():
                self.lock.unlink()
        except (OSError, json.JSONDecodeError):
            pass

    def unfinished(self) -> bool:
        return self.stage.exists() and any(self.stage.iterdir())

    def mark_stage(self, kind: str) -> None:
        """Say what works in the staged folder (``recipe`` or ``evaluate``)."""
        self.stage.mkdir(parents=True, exist_ok=True)
        (self.stage / STAGE_MARKER).write_text(json.dumps({"kind": kind, "pid": os.getpid()}))

    def stage_kind(self) -> str | None:
        """What left the staged folder (``recipe``, ``evaluate``; ``None``: unknown, as a run
        staged before the marker existed, which is taken for a recipe run)."""
        try:
            return json.loads((self.stage / STAGE_MARKER).read_text()).get("kind")
        except (OSError, json.JSONDecodeError, AttributeError):
            return None

    def remove_stage(self) -> None:
        """Remove a staged folder this tool wrote and that holds nothing to resume."""
        shutil.rmtree(self.stage, ignore_errors=True)

    def check_replaceable(self) -> None:
        """Refuse, before anything runs, to replace a results folder zoo did not write."""
        if not self.out.exists():
            return
        if not self.out.is_dir():
            raise NotOurFolderError(f"{self.out} is a file: choose another results folder")
        held = {p.name for p in self.out.iterdir()}
        if not held or RESULTS_MARKER in held or held <= OWN_FILES:
            return
        raise NotOurFolderError(
            f"{self.out} holds files zoo did not write ({', '.join(sorted(held - OWN_FILES)[:3])}"
            "): it is neither replaced nor moved; choose another results folder (-o, --results)"
        )

    def archive_unfinished(self) -> Path:
        """Move an unfinished staged run to the archive (``--fresh``)."""
        return self._archive(self.stage, f"{self.out.name}-unfinished")

    def _archive(self, folder: Path, label: str) -> Path:
        dest = self.out.parent / ".archive" / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while dest.exists():
            n += 1
            dest = dest.with_name(f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(dest))
        return dest

    def commit(self) -> Path | None:
        """The finished run replaces the results folder; the previous one goes to the archive
        (returned)."""
        (self.stage / STAGE_MARKER).unlink(missing_ok=True)
        (self.stage / RESULTS_MARKER).write_text(
            json.dumps({"written_by": "zoo", "time": time.time()})
        )
        previous = None
        if self.out.exists() and any(self.out.iterdir()):
            previous = self._archive(self.out, self.out.name)
        elif self.out.exists():
            self.out.rmdir()
        os.replace(self.stage, self.out)
        return previous
