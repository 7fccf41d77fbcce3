"""Every recipe trains under multi-process DDP, and DDP averages the gradients it should.

Every recipe in the system tier (`make test-slow`, so every backbone, loss and datamodule
class); the default suite runs one (``DEFAULT_DDP``). Each recipe runs through the command
a user runs (``zoo recipe NAME`` with DDP over two spawned CPU processes, gloo; ``make recipe
NAME=... GPUS=2`` builds the same command with ``--trainer.accelerator=gpu``), for two training
steps, then validates, tests and writes metrics.json. A probe callback records each rank's first
batch; the first step's gradients on rank 0 must equal, in one process, the average over the two
ranks' batches of the gradient of the training loss on each (replaying each rank's RNG state, so
dropout draws the same masks). That is what DDP computes by definition; for losses that average
over items it is the gradient on the concatenated global batch. The reference is the per-rank
average rather than the gradient on the concatenated batch because two backbones couple the items
of a device's batch: batch norm (U-Net; per device, as Lightning's default) and Meta-TasNet's
similarity term between neighbouring items of the batch.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SMOKE
from zoo.run.build import ZooCLI
from zoo.run.recipe import available_recipes, load_recipe

REPO = Path(__file__).resolve().parents[2]
DDP = [*SMOKE, "--trainer.devices=2", "--trainer.strategy=ddp"]


@pytest.fixture(scope="module")
def two_rank_musdb(tmp_path_factory):
    """A small mini MUSDB18-HQ with two validation and two test tracks: one per rank."""
    from zoo.data.musdb_mini import MusdbMiniSpec, prepare_musdb18_mini

    spec = MusdbMiniSpec(n_train=3, n_valid=2, n_test=2, seconds=4.0, with_stempeg_example=False)
    return prepare_musdb18_mini(tmp_path_factory.mktemp("data") / "MUSDB18-HQ", spec)


@pytest.fixture
def mini_root(tiny_libri2mix, two_rank_musdb):
    """The recipe's mini dataset: small sets in the real formats, used as they are
    (``--mini-root-dir``), so no test prepares the full mini sets again."""
    roots = {"libri2mix-mini": tiny_libri2mix, "musdb18-mini": two_rank_musdb}
    return lambda name: roots[load_recipe(name).mini_dataset]


def _zoo():
    exe = Path(sys.executable).with_name("zoo")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "zoo.cli"]


def _probe(out: Path) -> str:
    return json.dumps(
        {"class_path": "tests.integration.ddp_probe.FirstStepProbe", "init_args": {"out": str(out)}}
    )


def _run(cmd: list[str], cwd: Path, **env) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    run = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]


# The default tier trains one recipe under DDP (the quick start's); the system tier (`make
# test-slow`) trains every recipe, so every backbone, objective and datamodule class.
DEFAULT_DDP = {"libri2mix_mixit"}
DDP_CASES = [
    name if name in DEFAULT_DDP else pytest.param(name, marks=pytest.mark.system)
    for name in available_recipes()
]


@pytest.mark.parametrize("name", DDP_CASES)
def test_recipe_trains_under_ddp_with_averaged_gradients(name, mini_root, tmp_path):
    probe = tmp_path / "probe"
    cmd = [*_zoo(), "recipe", name, "--results", str(tmp_path / "results"),
           "--mini-root-dir", str(mini_root(name)), *DDP]  # fmt: skip
    _run([*cmd, f"--trainer.callbacks+={_probe(probe)}"], tmp_path)
    _check_ddp_run(name, tmp_path / "results" / name, probe)


@pytest.mark.system
def test_torchrun_launch_trains_with_averaged_gradients(mini_root, tmp_path):
    """torchrun starts both ranks at once (Lightning's TorchElastic environment): rank 1 waits
    until rank 0 holds the results folder, and the run is the same DDP run as Lightning's own
    launcher makes."""
    name, probe, results = "libri2mix_pit", tmp_path / "probe", tmp_path / "results"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "zoo.cli", "recipe", name, "--results", str(results),
           "--mini-root-dir", str(mini_root(name)), *DDP,
           f"--trainer.callbacks+={_probe(probe)}"]  # fmt: skip
    # rank 0 alone checks the folder: an unfinished run there is refused, not trained over
    unfinished = results / ".runs" / name / "last.ckpt"
    unfinished.parent.mkdir(parents=True)
    unfinished.write_bytes(b"an earlier run's checkpoint")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZOO_LAUNCH_TIMEOUT": "60"}
    refused = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0
    assert f"an unfinished run of {name} is in" in refused.stderr
    assert unfinished.read_bytes() == b"an earlier run's checkpoint"
    shutil.rmtree(results)
    _run(cmd, tmp_path, ZOO_LAUNCH_TIMEOUT="60")
    _check_ddp_run(name, results / name, probe)
    assert not (results / name / ".launch.json").exists()  # the launch marker is gone
    assert not (results / ".runs" / name).exists() and not (results / ".archive").exists()


def _check_ddp_run(name: str, out: Path, probe: Path) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["recipe"] == name

    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    # the distributed sampler gave the ranks different items
    assert not torch.equal(ranks[0]["batch"]["mix"], ranks[1]["batch"]["mix"])

    # one process: the same weights, each rank's batch and RNG, the loss averaged over ranks, in
    # the recipe's precision (the AudioSlots recipes train in bf16 autocast)
    config = next(out.glob("lightning_logs/version_*/config.yaml"))
    cli = ZooCLI(
        args=["--config", str(config), "--trainer.devices=1", "--trainer.strategy=auto"],
        run=False,
    )
    system = cli.model
    system.load_state_dict(ranks[0]["state"], strict=True)
    system.train()
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        for r in ranks:  # as each rank ran: its RNG state and thread count (summation order)
            torch.set_rng_state(r["rng"])
            torch.set_num_threads(r["threads"])
            with cli.trainer.precision_plugin.train_step_context():  # the recipe's autocast
                loss, _ = system.training_objective(r["batch"])
            (loss / len(ranks)).backward()
    finally:
        torch.set_rng_state(rng)
        torch.set_num_threads(threads)

    grads = ranks[0]["grads"]
    params = dict(system.named_parameters())
    assert set(grads) == {n for n, p in params.items() if p.requires_grad}
    scale = max(float(p.grad.abs().max()) for p in params.values() if p.grad is not None)
    for n, g in grads.items():
        torch.testing.assert_close(
            g, params[n].grad, rtol=1e-5, atol=1e-7 * scale, msg=lambda m, n=n: f"{n}: {m}"
        )


@pytest.mark.system
def test_fewer_validation_items_than_processes_is_one_line_naming_the_fix(tiny_musdb, tmp_path):
    """One validation track for two processes: a one-line error before any training step (it
    used to stop inside Lightning with "within local rank has zero length")."""
    cmd = [*_zoo(), "recipe", "musdb18_convtasnet", "--results", str(tmp_path / "results"),
           "--mini-root-dir", str(tiny_musdb), *DDP]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "1 evaluation item(s) (MusdbEvalDataset) for 2 processes" in run.stderr, run.stderr[
        -3000:
    ]
    assert "at most 1 device(s)" in run.stderr and "zero length" not in run.stderr
    assert not (tmp_path / "results" / "musdb18_convtasnet").exists()  # no results were made
