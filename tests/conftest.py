import importlib.util
from pathlib import Path

import pytest
import torch

from zoo.run.paths import ASSETS

FIXTURES = Path(__file__).parent / "fixtures"


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


needs_asteroid = pytest.mark.skipif(
    not has_module("asteroid"), reason="peer not installed (make bench-install)"
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The shared tiny Conv-TasNet of the unit tests: two repeats of three blocks (so repeat skips,
# block scales and the last-block layout are exercised), a few thousand parameters.
TINY_CONVTASNET = dict(
    n_filters=32, kernel_size=16, bn_chan=16, hid_chan=32, skip_chan=16, n_blocks=3, n_repeats=2
)


@pytest.fixture
def tiny_convtasnet():
    """Factory of tiny random Conv-TasNets: ``tiny_convtasnet(n_src=3, norm="cLN")``."""
    from zoo.backbones import ConvTasNet

    def make(**kw):
        return ConvTasNet(**{**TINY_CONVTASNET, **kw})

    return make


TINY_SPEC = dict(
    n_train=16,
    n_dev=4,
    n_test=5,
    speakers_train=6,
    speakers_dev=3,
    speakers_test=3,
    utterances_per_speaker=3,
)


@pytest.fixture(scope="session")
def tiny_libri2mix(tmp_path_factory):
    """A small mini Libri2Mix (real format), built once per test session."""
    from zoo.data.mini import MiniSpec, prepare_libri2mix_mini

    root = tmp_path_factory.mktemp("data") / "Libri2Mix"
    return prepare_libri2mix_mini(root, MiniSpec(**TINY_SPEC))


TINY_MUSDB = dict(n_train=3, n_valid=1, n_test=1, seconds=4.0, with_stempeg_example=True)


@pytest.fixture(scope="session")
def tiny_musdb(tmp_path_factory):
    """A small mini MUSDB18-HQ (real layout; the stempeg excerpt as a second test track when
    ffmpeg is there), built once per test session."""
    from zoo.data.musdb_mini import MusdbMiniSpec, prepare_musdb18_mini

    root = tmp_path_factory.mktemp("data") / "MUSDB18-HQ"
    return prepare_musdb18_mini(root, MusdbMiniSpec(**TINY_MUSDB))


# The smoke trainer fragment (conf/trainer/smoke.yaml): every test that runs a recipe runs it
# with these arguments first, its own after.
SMOKE = ["--config", str(ASSETS / "conf/trainer/smoke.yaml")]


@pytest.fixture
def quiet_trainer(tmp_path):
    """Factory of CPU Trainers that write and print nothing: ``quiet_trainer(max_steps=1)``."""
    import lightning as L

    def make(**kw):
        args = dict(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        return L.Trainer(**{**args, **kw})

    return make


@pytest.fixture(scope="session")
def trained_pit(tmp_path_factory, tiny_libri2mix):
    """``libri2mix_pit`` run once per session (smoke budget, float32, the mini network) on a
    copy of the tiny set without its mini marker, as a user's own Libri2Mix would be: its
    results are not labelled mini. ``.out`` is the results folder, ``.metrics`` its
    ``metrics.json``, ``.data`` the dataset. Tests that change anything copy it first
    (:func:`copy_run`)."""
    import shutil
    from types import SimpleNamespace

    from zoo.data.mini import MARKER
    from zoo.run.train import run_recipe

    base = tmp_path_factory.mktemp("trained")
    data = base / "Libri2Mix"
    shutil.copytree(tiny_libri2mix, data)
    (data / MARKER).unlink()
    metrics = run_recipe(
        "libri2mix_pit", overrides=SMOKE, results=base / "results", mini_root_dir=data
    )
    return SimpleNamespace(data=data, out=base / "results" / "libri2mix_pit", metrics=metrics)


def copy_run(trained, results):
    """A copy of the trained run's results folder as ``<results>/libri2mix_pit``."""
    import shutil

    results.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(trained.out, results / "libri2mix_pit"))
