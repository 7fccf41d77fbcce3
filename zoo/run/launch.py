"""How a recipe run was launched, and the SLURM job script that launches it on many nodes.

Three launch paths reach :func:`zoo.run.train.run_recipe`, all on Lightning's DDP:

- ``zoo recipe NAME --gpus N`` (one node): the command is rank 0; Lightning starts ranks
  1..N-1 as copies of the command line with ``LOCAL_RANK`` set, after rank 0 has taken the
  results folder.
- ``torchrun --nnodes M --nproc-per-node N -m zoo.cli recipe NAME --gpus N --nodes M``: all
  ranks start at once (Lightning's TorchElastic environment, ``RANK`` / ``WORLD_SIZE`` from
  torchrun).
- SLURM, ``srun zoo recipe NAME --gpus N --nodes M`` inside an ``sbatch`` job (one task per
  device, Lightning's SLURM environment, ``SLURM_PROCID``): all ranks start at once, and a job
  preempted or at its time limit is requeued by Lightning (``#SBATCH --signal=SIGUSR1@90``); the
  requeued job resumes (:func:`slurm_script`).

Only global rank 0 prepares data and takes, checks and commits the results folder
(:mod:`zoo.run.folders`). Where all ranks start at once, the others wait until rank 0 has done so
(:func:`announce` / :func:`wait_for_rank_zero`, a marker file in the staged run folder, which
must be on a file system every node sees, as the results are).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

__all__ = [
    "announce",
    "global_rank",
    "is_ddp_worker",
    "launcher",
    "slurm_script",
    "wait_for_rank_zero",
    "withdraw",
]

MARKER = ".launch.json"


def _slurm_managed() -> bool:
    """A batch task of a SLURM job (as Lightning's SLURMEnvironment.detect: not an interactive
    shell allocation)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def launcher() -> str:
    """``torchrun``, ``slurm``, ``lightning`` (a rank Lightning started) or ``single``."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if _slurm_managed() and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return "slurm"
    if "LOCAL_RANK" in os.environ:
        return "lightning"
    return "single"


def global_rank() -> int:
    """This process's rank among all (0 when there is one process)."""
    kind = launcher()
    if kind == "torchrun":
        return int(os.environ.get("RANK", "0"))
    if kind == "slurm":
        return int(os.environ.get("SLURM_PROCID", "0"))
    # Lightning's own launcher: the command itself is local rank 0 of its node, the ranks it
    # starts have LOCAL_RANK 1.. (the exact global rank does not matter here, only whether it is 0)
    return int(os.environ.get("LOCAL_RANK", "0")) + int(os.environ.get("NODE_RANK", "0"))


def is_ddp_worker() -> bool:
    """Any rank but global rank 0: it neither prepares data nor touches the results folder."""
    return global_rank() != 0


def _launch_id() -> str | None:
    """What every rank of one launch shares and the next launch does not (None: a launch whose
    ranks start in order, with nothing to wait for)."""
    kind = launcher()
    if kind == "torchrun":
        return f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}:" + os.environ.get(
            "TORCHELASTIC_RESTART_COUNT", "0"
        )
    if kind == "slurm":
        env = os.environ
        return (
            f"slurm:{env.get('SLURM_JOB_ID')}.{env.get('SLURM_STEP_ID', '')}:"
            f"{env.get('SLURM_RESTART_COUNT', '0')}"
        )
    return None


def announce(stage: Path) -> None:
    """Rank 0, once it holds the results folder: tell the ranks started with it to go on."""
    launch = _launch_id()
    if launch is None:
        return
    stage.mkdir(parents=True, exist_ok=True)
    tmp = stage / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"launch": launch, "time": time.time(), "pid": os.getpid()}))
    os.replace(tmp, stage / MARKER)


def withdraw(stage: Path) -> None:
    """Rank 0 at the end of its run: the marker goes (a later launch must not read it)."""
    if _launch_id() is not None:
        (stage / MARKER).unlink(missing_ok=True)
        if stage.is_dir() and not any(stage.iterdir()):
            stage.rmdir()  # nothing else was written: no unfinished run to report


def wait_for_rank_zero(stage: Path, timeout: float | None = None, poll: float = 0.5) -> None:
    """A rank started at the same time as rank 0 waits until rank 0 has announced this launch
    in ``stage`` (``ZOO_LAUNCH_TIMEOUT`` seconds at most, default 900)."""
    launch = _launch_id()
    if launch is None or not is_ddp_worker():
        return
    timeout = float(os.environ.get("ZOO_LAUNCH_TIMEOUT", 900)) if timeout is None else timeout
    started = time.time()
    marker = stage / MARKER
    while True:
        try:
            info = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        # the same launch id, written by this launch (not a marker left by a killed rank 0 of
        # an earlier launch that happened to share the id, as torchrun's default "none")
        if info.get("launch") == launch and info.get("time", 0) > started - 600:
            return
        if time.time() - started > timeout:
            raise TimeoutError(
                f"rank {global_rank()}: rank 0 did not take {stage.parent.parent / stage.name} "
                f"within {timeout:.0f} s (no {marker}): see rank 0's error, and check that "
                "the results folder is on a file system every node sees (ZOO_LAUNCH_TIMEOUT "
                "sets the wait)"
            )
        time.sleep(poll)


def slurm_script(
    name: str,
    nodes: int = 1,
    gpus: int = 1,
    time_limit: str = "48:00:00",
    data: str | None = None,
    results: str = "results",
    partition: str | None = None,
    account: str | None = None,
    cpus_per_task: int = 8,
    venv: str = ".venv",
    overrides: list[str] | None = None,
) -> str:
    """An ``sbatch`` script that trains recipe ``name`` on ``nodes`` x ``gpus`` GPUs with
    Lightning's DDP and its SLURM environment: one task per GPU (``srun``), requeued with a
    checkpoint when preempted or 90 s before the time limit, resumed when requeued.

    Args:
        name: the recipe.
        nodes: nodes (``--nodes``).
        gpus: GPUs per node (``--gres=gpu:N``, ``--ntasks-per-node=N``).
        time_limit: the job's time limit (``--time``).
        data: dataset root (``--data``); without it the run uses the built-in mini data.
        results: results folder (on a file system every node sees).
        partition, account: ``--partition`` / ``--account`` when given.
        cpus_per_task: CPU cores per task (data-loading workers).
        venv: the virtual environment to activate.
        overrides: further ``zoo recipe`` arguments (LightningCLI overrides).

    Returns:
        The script's text (``zoo slurm NAME > train.sbatch; sbatch train.sbatch``).
    """
    if nodes < 1 or gpus < 1:
        raise ValueError(f"nodes={nodes} and gpus={gpus} must both be at least 1")
    head = [
        "#!/bin/bash",
        f"#SBATCH --job-name=zoo-{name}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks-per-node={gpus}",
        f"#SBATCH --gres=gpu:{gpus}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --time={time_limit}",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        "#SBATCH --output=slurm-%x-%j.out",
    ]
    head += [f"#SBATCH --partition={partition}"] if partition else []
    head += [f"#SBATCH --account={account}"] if account else []
    cmd = ["zoo", "recipe", name, "--gpus", str(gpus), "--nodes", str(nodes)]
    cmd += ["--data", data] if data else []
    cmd += ["--results", results, *(overrides or [])]
    body = [
        "",
        "# Global batch = data.init_args.batch_size (per GPU) x GPUs per node x nodes.",
        "# Lightning's SLURM environment reads the ranks from srun; on SIGUSR1 (preemption, or",
        "# 90 s before --time) it saves a checkpoint and requeues the job, which then resumes.",
        f"source {shlex.quote(venv)}/bin/activate",
        'RESUME=$([ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && echo --resume)',
        f"srun {shlex.join(cmd)} $RESUME",
    ]
    return "\n".join(head + body) + "\n"
