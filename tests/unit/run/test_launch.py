"""Launch paths: which rank a process is under each launcher, rank 0 announcing the folder it
holds to ranks started at the same time, and the SLURM job script."""

import json
import threading
import time

import pytest

from zoo.cli import main
from zoo.run import launch

LAUNCH_VARS = (
    "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "RANK", "LOCAL_RANK", "NODE_RANK",
    "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME", "SLURM_JOB_ID",
    "SLURM_STEP_ID", "SLURM_RESTART_COUNT",
)  # fmt: skip


@pytest.fixture
def env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_(**values):
        for k, v in values.items():
            monkeypatch.setenv(k, str(v))

    return set_


def test_single_process_is_rank_zero(env):
    env()
    assert launch.launcher() == "single" and launch.global_rank() == 0
    assert not launch.is_ddp_worker()


def test_lightning_started_ranks_are_workers(env):
    env(LOCAL_RANK=1)
    assert launch.launcher() == "lightning" and launch.is_ddp_worker()
    env(LOCAL_RANK=0, NODE_RANK=1)  # the command on the second node
    assert launch.is_ddp_worker()


@pytest.mark.parametrize("rank", [0, 1, 5])
def test_torchrun_rank_is_its_global_rank(env, rank):
    # on node 1, local rank 0 is global rank 4: only global rank 0 takes the folder
    env(TORCHELASTIC_RUN_ID="abc", RANK=rank, LOCAL_RANK=rank % 4, WORLD_SIZE=8)
    assert launch.launcher() == "torchrun" and launch.global_rank() == rank
    assert launch.is_ddp_worker() == (rank != 0)


def test_slurm_rank_is_the_task_id(env):
    env(SLURM_NTASKS=8, SLURM_PROCID=3, SLURM_JOB_NAME="zoo-x", SLURM_JOB_ID=77)
    assert launch.launcher() == "slurm" and launch.global_rank() == 3
    env(SLURM_JOB_NAME="bash", SLURM_PROCID=0)  # an interactive allocation: not a batch task
    assert launch.launcher() == "single"


def test_workers_wait_for_rank_zero_of_their_launch(env, tmp_path):
    stage = tmp_path / ".runs" / "r"
    env(TORCHELASTIC_RUN_ID="run-1", RANK=1)
    with pytest.raises(TimeoutError, match="rank 0 did not take .* file system every node"):
        launch.wait_for_rank_zero(stage, timeout=0.3, poll=0.05)
    # a marker of another launch (a killed earlier run) does not count
    env(RANK=0, TORCHELASTIC_RUN_ID="run-0")
    launch.announce(stage)
    env(RANK=1, TORCHELASTIC_RUN_ID="run-1")
    with pytest.raises(TimeoutError):
        launch.wait_for_rank_zero(stage, timeout=0.3, poll=0.05)

    def rank_zero_later():  # same process, so the env is shared: write the marker by hand
        time.sleep(0.3)
        info = {"launch": "torchrun:run-1:0", "time": time.time(), "pid": 1}
        (stage / launch.MARKER).write_text(json.dumps(info))

    t = threading.Thread(target=rank_zero_later)
    start = time.time()
    t.start()
    launch.wait_for_rank_zero(stage, timeout=10, poll=0.05)
    t.join()
    assert 0.25 < time.time() - start < 5


def test_withdraw_leaves_no_marker_nor_an_empty_stage(env, tmp_path):
    stage = tmp_path / ".runs" / "r"
    env(TORCHELASTIC_RUN_ID="run-1", RANK=0)
    launch.announce(stage)
    assert (stage / launch.MARKER).is_file()
    launch.withdraw(stage)
    assert not stage.exists()
    launch.announce(stage)
    (stage / "last.ckpt").write_bytes(b"x")  # an unfinished run stays for --resume
    launch.withdraw(stage)
    assert sorted(p.name for p in stage.iterdir()) == ["last.ckpt"]


def test_slurm_script_runs_one_task_per_gpu_and_resumes_when_requeued(capsys):
    assert main(["slurm", "libri2mix_pit", "--nodes", "2", "--gpus", "4", "--data", "/d/Libri2Mix",
                 "--partition", "gpu", "--trainer.precision=bf16-mixed"]) == 0  # fmt: skip
    script = capsys.readouterr().out
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("nodes=2", "ntasks-per-node=4", "gres=gpu:4", "signal=SIGUSR1@90", "requeue",
                 "partition=gpu"):  # fmt: skip
        assert f"#SBATCH --{line}" in lines
    srun = [line for line in lines if line.startswith("srun ")]
    assert srun == [
        "srun zoo recipe libri2mix_pit --gpus 4 --nodes 2 --data /d/Libri2Mix --results results "
        "--trainer.precision=bf16-mixed $RESUME"
    ]
    assert 'RESUME=$([ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && echo --resume)' in lines
    assert "#SBATCH --account" not in script


def test_slurm_script_refuses_zero_devices(capsys):
    assert main(["slurm", "libri2mix_pit", "--gpus", "0"]) == 2
    assert "gpus=0 must both be at least 1" in capsys.readouterr().err
