"""The ``zoo`` command's error contract: what a user can fix is one line (exit 2), running out
of memory is one line saying what to lower, an internal error keeps its traceback."""

import errno

import pytest
import torch

import zoo.run.recipe
from zoo.cli import main


def _failing(exc):
    def available_recipes(recipes: str | None = None) -> list[str]:
        """List the recipes.

        Args:
            recipes: an extra folder of recipes.
        """
        raise exc

    return available_recipes


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value x: use y"),
        FileNotFoundError("no such file z"),
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("Error writing: No space left on device"),  # libsndfile's full disk
    ],
)
def test_user_errors_are_one_line(exc, monkeypatch, capsys):
    monkeypatch.setattr(zoo.run.recipe, "available_recipes", _failing(exc))
    assert main(["recipes"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("zoo recipes: error: ")


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
    ],
)
def test_out_of_memory_says_what_to_lower(exc, monkeypatch, capsys):
    monkeypatch.setattr(zoo.run.recipe, "available_recipes", _failing(exc))
    assert main(["recipes"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "out of memory" in err
    assert "--data.init_args.batch_size" in err and "bf16-mixed" in err


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), OSError("an I/O bug"), TypeError("x")])
def test_internal_errors_keep_their_traceback(exc, monkeypatch):
    monkeypatch.setattr(zoo.run.recipe, "available_recipes", _failing(exc))
    with pytest.raises(type(exc)):
        main(["recipes"])


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch):
    monkeypatch.setattr(zoo.run.recipe, "available_recipes", _failing(ValueError("v")))
    with pytest.raises(ValueError):
        main(["recipes", "--debug"])


def test_an_error_in_a_loader_worker_is_its_own_line_only(tmp_path, capsys):
    """Bad data read by a DataLoader worker: the worker's traceback travels inside the error's
    message; the user sees the one line that names the file."""
    from torch.utils.data import DataLoader

    from zoo.data.audio import AudioError

    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise AudioError(f"{tmp_path}/x.wav: not a readable audio file")

    def available_recipes(recipes: str | None = None) -> list[str]:
        """List the recipes.

        Args:
            recipes: an extra folder of recipes.
        """
        next(iter(DataLoader(Bad(), num_workers=1)))

    import zoo.run.recipe

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo.run.recipe, "available_recipes", available_recipes)
        assert main(["recipes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zoo recipes: error: {tmp_path}/x.wav: not a readable audio file"
