"""Nothing lost, nothing silent: what the tool writes, moves and refuses, tried as a clumsy or
hostile user would, through the commands a user runs."""

import json
import os
import pickle
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
    mine = {  # a user's own files, also inside the folders the mini set writes
        "my_notes.txt": "kept",
        "wav8k/min/my_augmented/extra.wav": "RIFF mine",
        "wav8k/min/metadata/my_own_split.csv": "mixture_ID\n",
        "wav8k/min/train-100/s1/my_take.wav": "RIFF mine too",
    }
    for rel, text in mine.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    written = set(json.loads((root / MARKER).read_text())["files"])
    prepare_libri2mix_mini(root, spec, force=True)  # --force: rebuilt, its own files only
    again = MiniSpec(**{**TINY_SPEC, "n_train": 5, "n_dev": 2, "n_test": 2, "seed": 1})
    prepare_libri2mix_mini(root, again)  # another spec: ours, so rebuilt, its own files only
    assert {rel: (root / rel).read_text() for rel in mine} == mine
    assert json.loads((root / MARKER).read_text())["spec"]["seed"] == 1
    now = set(json.loads((root / MARKER).read_text())["files"])
    assert all((root / rel).is_file() for rel in now)
    stale = written - now  # the first build's files that the second spec does not write
    assert stale and not any((root / rel).exists() for rel in stale)
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
    kill = _kill_at(1, "SIGTERM", batch=1)
    run = _run(tmp_path, *LONGER, kill, env=data_env, check=143)
    assert "stopped by SIGTERM, checkpoint saved at" in run.stderr and "--resume" in run.stderr
    assert not (tmp_path / "results" / "libri2mix_pit").exists()  # not finished: not in place
    again = _run(tmp_path, *LONGER, kill, env=data_env, check=2)  # neither resumed nor fresh
    assert "unfinished run of libri2mix_pit" in again.stderr and "--resume" in again.stderr
    _run(tmp_path, *LONGER, kill, "--resume", env=data_env, check=0)
    metrics = json.loads((tmp_path / "results/libri2mix_pit/metrics.json").read_text())
    # every step done once: 3 epochs of the tiny set's 16 mixtures in batches of 8
    assert metrics["epochs"] == 3 and metrics["train_steps"] == 3 * (TINY_SPEC["n_train"] // 8)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.system
def test_kill_9_mid_epoch_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path, data_env):
    """The path a user runs: ``zoo recipe`` killed with SIGKILL in the middle of an epoch,
    then ``zoo recipe --resume``: the same tested checkpoint, the same final weights and the
    same test scores as an uninterrupted run (one process, no loader workers)."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    longer = ["--trainer.max_epochs=4", "--trainer.limit_train_batches=2",
              "--trainer.limit_val_batches=2"]  # fmt: skip
    kill = _kill_at(2, "SIGKILL", batch=1)
    _run(whole, *longer, env=data_env, check=0)
    killed = _run(parts, *longer, kill, env=data_env)
    assert killed.returncode == -signal.SIGKILL
    _run(parts, *longer, kill, "--resume", env=data_env, check=0)
    a_out, b_out = (d / "results/libri2mix_pit" for d in (whole, parts))
    a_m, b_m = (json.loads((o / "metrics.json").read_text()) for o in (a_out, b_out))
    assert (a_m["si_sdr"], a_m["train_steps"]) == (b_m["si_sdr"], b_m["train_steps"])
    # one logger version, the same tested (best) checkpoint, the same last weights
    assert [p.name for p in (b_out / "lightning_logs").iterdir()] == ["version_0"]
    ckpts = [sorted(p.name for p in (o / "lightning_logs/version_0/checkpoints").iterdir())
             for o in (a_out, b_out)]  # fmt: skip
    assert ckpts[0] == ckpts[1] and any(n.startswith("best-") for n in ckpts[0])
    for name in ckpts[0]:
        ck = [_state(o / "lightning_logs/version_0/checkpoints" / name) for o in (a_out, b_out)]
        assert _same_weights(*ck), name
    a = load_file(str(a_out / "model/model.safetensors"))
    b = load_file(str(b_out / "model/model.safetensors"))
    assert _same_weights(a, b)


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


# -- 5. resume refuses what would not be the same run, and unreadable checkpoints -------------


def _unfinished(trained, results: Path) -> Path:
    """The trained run's folder as an unfinished staged run (its last.ckpt ends the training)."""
    stage = results / ".runs" / "libri2mix_pit"
    shutil.copytree(trained.out, stage, ignore=shutil.ignore_patterns("model", "*.json", "*.csv"))
    return stage


def test_resume_refuses_other_settings_and_records_a_longer_budget(trained_pit, tmp_path, capsys):
    from zoo.run.train import run_recipe

    results = tmp_path / "results"
    stage = _unfinished(trained_pit, results)
    base = ["recipe", "libri2mix_pit", "--results", str(results), "--resume", *SMOKE]
    data = ["--mini-root-dir", str(trained_pit.data)]
    for changed, key in (
        (["--model.optimizer.init_args.lr=0.5", *data], "model.optimizer.init_args.lr=0.5"),
        (["--mini-root-dir", str(tmp_path)], "data.init_args.root="),
        (["--model.backbone.init_args.n_blocks=2", *data], "model.backbone.init_args.n_blocks"),
    ):
        assert main([*base, *changed]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and key in err and "--fresh" in err, err
        assert (stage / "lightning_logs/version_0/checkpoints/last.ckpt").is_file()  # kept
    # a longer budget is what a user may change: it trains on, and the results say so
    metrics = run_recipe("libri2mix_pit", results=results, resume=True,
                         overrides=[*SMOKE, "--trainer.max_epochs=2"],
                         mini_root_dir=trained_pit.data)  # fmt: skip
    assert metrics["epochs"] == 2 and metrics["resumed_with"] == {"trainer.max_epochs": [1, 2]}


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_an_unreadable_checkpoint_is_one_line_naming_it(damage, trained_pit, tmp_path, capsys):
    results = tmp_path / "results"
    last = _unfinished(trained_pit, results) / "lightning_logs/version_0/checkpoints/last.ckpt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    else:  # a pickle that would run code if it were unpickled
        last.write_bytes(pickle.dumps(_Evil()))
    args = ["recipe", "libri2mix_pit", "--results", str(results), "--resume", *SMOKE,
            "--mini-root-dir", str(trained_pit.data)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(last) in err and "--fresh" in err, err
    assert ("unreadable" if damage == "truncated" else "not a checkpoint of ours") in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# -- 6. SIGTERM outside training: every stage exits 143 and says what is left ---------------


def _sigterm_in_test_step(monkeypatch):
    from zoo.system import SeparationSystem

    original = SeparationSystem.test_step

    def test_step(self, batch, batch_idx):
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops after this batch
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SeparationSystem, "test_step", test_step)


def test_sigterm_in_the_test_stage_exits_143_and_resume_finishes(tiny_libri2mix, tmp_path,
                                                                 monkeypatch, capsys):  # fmt: skip
    results = tmp_path / "results"
    args = ["recipe", "libri2mix_pit", "--results", str(results), *SMOKE,
            "--mini-root-dir", str(tiny_libri2mix)]  # fmt: skip
    _sigterm_in_test_step(monkeypatch)
    assert main(args) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM, checkpoint saved at" in err and "--resume" in err
    assert not (results / "libri2mix_pit").exists()
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0  # training was over: the resumed run tests
    assert json.loads((results / "libri2mix_pit/metrics.json").read_text())["n_items"] == 5


def test_sigterm_during_evaluate_exits_143_and_leaves_nothing(trained_pit, tmp_path,
                                                             monkeypatch, capsys):  # fmt: skip
    out = tmp_path / "eval"
    _sigterm_in_test_step(monkeypatch)
    args = ["evaluate", str(trained_pit.out / "model"), "--data", str(trained_pit.data)]
    assert main([*args, "-o", str(out)]) == 143
    assert "evaluation stopped by SIGTERM" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".runs" / "eval").exists()


def test_export_never_replaces_a_model_folder_without_overwrite(trained_pit, tmp_path, capsys):
    ckpt = next(trained_pit.out.glob("lightning_logs/version_0/checkpoints/best-*.ckpt"))
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export", str(ckpt), "-o", str(out)]
    assert main(args) == 2  # a folder with something in it
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                     "notes.txt"]  # fmt: skip


def test_evaluate_replaces_only_what_zoo_wrote_and_never_an_unfinished_run(
    trained_pit, tmp_path, capsys
):
    model = str(trained_pit.out / "model")
    args = ["evaluate", model, "--data", str(trained_pit.data), "--limit", "1"]
    mine = tmp_path / "my_folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    assert main([*args, "-o", str(mine)]) == 2  # a folder of the user's: refused, untouched
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "zoo did not write" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert not (tmp_path / ".archive").exists()
    # a results folder with a killed run waiting for --resume: the run is left alone
    results = tmp_path / "results"
    stage = _unfinished(trained_pit, results)
    before = sorted(p.relative_to(stage) for p in stage.rglob("*"))
    assert main([*args, "-o", str(results / "libri2mix_pit")]) == 2
    err = capsys.readouterr().err.strip()
    assert "waits in" in err and "--resume" in err and len(err.splitlines()) == 1
    assert sorted(p.relative_to(stage) for p in stage.rglob("*")) == before
    assert not (results / ".archive").exists()
    # a folder zoo wrote is replaced, the previous one archived
    out = tmp_path / "eval"
    assert main([*args, "-o", str(out)]) == 0 and main([*args, "-o", str(out)]) == 0
    assert len(list((tmp_path / ".archive").iterdir())) == 1


def test_bad_evaluation_requests_are_refused_or_recorded(trained_pit, tmp_path, capsys):
    model = str(trained_pit.out / "model")
    data = ["--data", str(trained_pit.data)]
    assert main(["evaluate", model, *data, "--limit", "-1", "-o", str(tmp_path / "a")]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for task in ("bogus", "enh_single"):
        (recipes / f"r_{task}.yaml").write_text(
            "compose: [conf/trainer/default.yaml, conf/data/libri2mix.yaml,"
            " conf/backbone/convtasnet.yaml, conf/loss/pit.yaml]\n"
            f"data:\n  init_args:\n    task: {task}\n"
        )
    args = ["evaluate", model, *data, "--limit", "2"]
    assert main([*args, "--recipe", str(recipes / "r_bogus.yaml"), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown Libri2Mix task 'bogus'" in err
    # two outputs scored on a one-source task: the better one, and the results say so
    out = tmp_path / "c"
    assert main([*args, "--recipe", str(recipes / "r_enh_single.yaml"), "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["outputs_scored"].startswith("the best-matching 1 of 2 outputs")
