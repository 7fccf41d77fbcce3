"""`make gpu-check DRY=1`: the one-shot GPU check's own code path on the CPU, so it does not rot
before a GPU machine runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.run.recipe import available_recipes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.system
def test_gpu_check_dry_run_measures_every_recipe_and_compares_validation(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry", "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["dry"] is True
    single = [r for r in report["train"] if r["devices"] == 1]
    # every recipe in float32 and bf16, with a step time and its batch
    assert {(r["recipe"], r["precision"]) for r in single} == {
        (n, p) for n in available_recipes() for p in ("32-true", "bf16-mixed")
    }
    assert all(r["s_per_step"] > 0 and r["samples_per_s"] > 0 for r in single)
    # DDP over 2 CPU processes for the first recipe, with its scaling efficiency
    (ddp,) = [r for r in report["train"] if r["devices"] == 2]
    assert ddp["precision"] == "bf16-mixed" and ddp["efficiency"] > 0
    # validation on 1 and on 2 processes gives the same SI-SDR of the same items
    assert report["validation"]["equal"] is True
    assert report["bss_eval"]["cpu_s"] > 0 and report["bss_eval"]["museval_s"] > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "DRY RUN" in md and "libri2mix_pit" in md
