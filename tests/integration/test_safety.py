"""Nothing lost, nothing silent: what the tool writes, moves and refuses, tried as a clumsy or
hostile user would, through the commands a user runs."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import SMOKE, TINY_SPEC, copy_run
from zoo.cli import main
from zoo.data.mini import MARKER, MiniSpec, prepare_libri2mix_mini
from zoo.data.musdb_mini import MusdbMiniSpec, prepare_musdb18_mini

REPO = Path(__file__).resolve().parents[2]


# -- 1. data preparation never deletes what it did not write ---------------------------------


def _a_real_dataset(root: Path) -> dict:
    """A folder laid out like a user's Libri2Mix / MUSDB18-HQ, with files of its own."""
    files = {
        "wav8k/min/test/s1/real.wav": b"RIFF real data",
        "wav8k/min/metadata/mixture_test_mix_clean.csv": b"mixture_ID,...\n",
        "train/Some Artist - Song/vocals.wav": b"RIFF real stems",
        "notes.txt": b"mine",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.mark.parametrize("dataset", ["libri2mix-mini", "musdb18-mini"])
def test_prepare_refuses_a_folder_it_did_not_write(dataset, tmp_path, capsys):
    root = tmp_path / "Real"
    files = _a_real_dataset(root)
    for extra in ([], ["--force"]):  # --force never replaces what is there either
        assert main(["prepare", dataset, "--root", str(root), *extra]) == 2
        assert "holds no mini set written by zoo" in capsys.readouterr().err
        assert {rel: (root / rel).read_bytes() for rel in files} == files
        assert not (root / MARKER).exists()


def test_prepare_rebuilds_only_its_own_files(tmp_path):
    root = tmp_path / "Libri2Mix"
    spec = MiniSpec(**{**TINY_SPEC, "n_train": 4, "n_dev": 2, "n_test": 2})
    prepare_libri2mix_mini(root, spec)
    (root / "my_notes.txt").write_text("kept")
    again = MiniSpec(**{**TINY_SPEC, "n_train": 5, "n_dev": 2, "n_test": 2})
    prepare_libri2mix_mini(root, again)  # another spec: ours, so rebuilt
    assert (root / "my_notes.txt").read_text() == "kept"
    assert json.loads((root / MARKER).read_text())["n_train"] == 5
    # an empty folder, or a new one, is fine; --force adds next to unrelated files
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("x")
    music = MusdbMiniSpec(n_train=2, n_valid=1, n_test=1, seconds=1.0, with_stempeg_example=False)
    prepare_musdb18_mini(other, music, force=True)
    assert (other / "readme.txt").read_text() == "x" and (other / MARKER).is_file()


# -- 2. results are replaced only by a finished run; runs are locked --------------------------


def _run(tmp_path, *args, env=(), check=None):
    cmd = [sys.executable, "-m", "zoo.cli", "recipe", "libri2mix_pit", "--results",
           str(tmp_path / "results"), *env, *SMOKE, *args]  # fmt: skip
    run = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    if check is not None:
        assert run.returncode == check, run.stdout[-2000:] + run.stderr[-3000:]
    return run


@pytest.fixture
def data_env(tiny_libri2mix):
    """The tiny set as the mini Libri2Mix (used as it is: --mini-root-dir)."""
    return ["--mini-root-dir", str(tiny_libri2mix)]


def test_a_failed_rerun_keeps_the_results(trained_pit, tmp_path):
    results = tmp_path / "results"
    copy_run(trained_pit, results)
    kept = (results / "libri2mix_pit" / "metrics.json").read_text()
    bad_data = ["recipe", "libri2mix_pit", "--data", str(tmp_path / "typo"),
                "--results", str(results), *SMOKE]  # fmt: skip
    assert main(bad_data) == 2
    bad_key = [*bad_data[:2], "--results", str(results), *SMOKE, "--trainer.max_epochz=1"]
    with pytest.raises(SystemExit):  # jsonargparse's own message for an unknown key
        main(bad_key)
    assert (results / "libri2mix_pit" / "metrics.json").read_text() == kept
    assert not (results / ".archive").exists()  # nothing was moved
    assert not (results / ".runs" / "libri2mix_pit").exists()  # nor left behind


@pytest.mark.system
def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path, data_env):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "results" / ".runs" / "libri2mix_pit.lock"
        lock.parent.mkdir(parents=True)
        import socket

        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                    "command": "zoo recipe libri2mix_pit"}))  # fmt: skip
        run = _run(tmp_path, env=data_env, check=2)
        assert f"being written by process {sleeper.pid}" in run.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    _run(tmp_path, env=data_env, check=0)  # its process is gone: the lock is taken over
    assert (tmp_path / "results" / "libri2mix_pit" / "metrics.json").is_file()
    assert not lock.exists()


def test_make_clean_keeps_results_and_archive(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for rel in ("results/x/metrics.json", "results/.archive/x-1/metrics.json",
                "lightning_logs/version_0/a", ".ruff_cache/b"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1")
    subprocess.run(["make", "-s", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "results/x/metrics.json").is_file()
    assert (tmp_path / "results/.archive/x-1/metrics.json").is_file()
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / ".ruff_cache").exists()


# -- 3. resume: SIGTERM saves and exits 143; kill -9 then --resume ends where an uninterrupted
#       run ends ----------------------------------------------------------------------------


def _kill_at(epoch, sig, batch=None):
    spec = {"class_path": "tests.integration.kill_probe.KillAt",
            "init_args": {"epoch": epoch, "sig": sig, "batch": batch}}  # fmt: skip
    return f"--trainer.callbacks+={json.dumps(spec)}"


LONGER = ["--trainer.max_epochs=3", "--trainer.limit_train_batches=3"]


@pytest.mark.system
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, data_env):
    run = _run(tmp_path, *LONGER, _kill_at(1, "SIGTERM", batch=1), env=data_env, check=143)
    assert "stopped by SIGTERM, checkpoint saved at" in run.stderr and "--resume" in run.stderr
    assert not (tmp_path / "results" / "libri2mix_pit").exists()  # not finished: not in place
    again = _run(tmp_path, *LONGER, env=data_env, check=2)  # neither resumed nor fresh: say so
    assert "unfinished run of libri2mix_pit" in again.stderr and "--resume" in again.stderr
    _run(tmp_path, *LONGER, "--resume", env=data_env, check=0)
    metrics = json.loads((tmp_path / "results/libri2mix_pit/metrics.json").read_text())
    # every step done once: 3 epochs of the tiny set's 16 mixtures in batches of 8
    assert metrics["epochs"] == 3 and metrics["train_steps"] == 3 * (TINY_SPEC["n_train"] // 8)


@pytest.mark.system
def test_kill_9_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, data_env):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    _run(whole, *LONGER, env=data_env, check=0)
    killed = _run(parts, *LONGER, _kill_at(2, "SIGKILL"), env=data_env)
    assert killed.returncode == -signal.SIGKILL
    _run(parts, *LONGER, "--resume", env=data_env, check=0)
    a = load_file(str(whole / "results/libri2mix_pit/model/model.safetensors"))
    b = load_file(str(parts / "results/libri2mix_pit/model/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from zoo.run.checkpoints import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left


# -- 4. evaluate names its folder after the model and never overwrites a results folder -------


def test_evaluate_never_overwrites_results(trained_pit, tiny_libri2mix, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    from zoo.run.evaluate import evaluate

    results = tmp_path / "results"
    copy_run(trained_pit, results)
    model = str(results / "libri2mix_pit" / "model")
    tiny = "convtasnet-tiny-random"
    a = evaluate(model, data=str(tiny_libri2mix), results=str(results), limit=2)
    b = evaluate(tiny, "libri2mix_pit", str(tiny_libri2mix), results=str(results), limit=2,
                 download=True)  # fmt: skip
    assert a["model"] != b["model"]  # two models: two folders, named after them
    folders = sorted(p.name for p in results.iterdir() if p.name.startswith("eval-"))
    assert folders == sorted([f"eval-{a['model']}-libri2mix_pit", f"eval-{tiny}-libri2mix_pit"])
    # pointed at the recipe's own results folder: the recipe's results are archived, not lost
    kept = (results / "libri2mix_pit" / "metrics.json").read_text()
    evaluate(model, data=str(tiny_libri2mix), out=str(results / "libri2mix_pit"), limit=1)
    archived = list((results / ".archive").glob("libri2mix_pit-*/metrics.json"))
    assert [p.read_text() for p in archived] == [kept]
