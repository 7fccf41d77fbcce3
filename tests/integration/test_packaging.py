"""A regular (non-editable) install works away from the checkout: recipes, conf fragments, the
registry's tiny models and the published figures ship inside the package."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.system
def test_wheel_install_runs_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(REPO),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("separation_zoo-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    # the dependencies come from this environment (torch is 4.6 GB); the zoo from the wheel
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "ZOO_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    env.pop("ZOO_DATA_DIR", None)

    def zoo(*args):
        run = subprocess.run(
            [str(venv / "bin" / "zoo"), *args], cwd=work, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    where = subprocess.run(
        [str(py), "-c", "import zoo; print(zoo.__file__)"], cwd=work, env=env,
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert str(venv) in where and str(REPO) not in where
    assert "convtasnet-tiny-random" in zoo("list")
    assert "libri2mix_mixit" in zoo("recipes").split()
    sf.write(work / "x.wav", np.random.default_rng(0).standard_normal(8000) * 0.1, 8000)
    zoo("separate", "convtasnet-tiny-random", "x.wav", "-o", "out", "--download")
    assert sorted(p.name for p in (work / "out").iterdir()) == ["x_s1.wav", "x_s2.wav"]
    results = REPO / "tests" / "fixtures" / "results"
    zoo("leaderboard", "--results", str(results), "-o", str(work / "LEADERBOARD.md"))
    assert "Published figures" in (work / "LEADERBOARD.md").read_text()
