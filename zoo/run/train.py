"""The run of a recipe: prepare the data -> fit -> test the best checkpoint -> results ->
export. One function (:func:`run_recipe`); :func:`resolve` turns a recipe into LightningCLI
arguments and :func:`instantiate` builds and checks the classes, for the run and for
``zoo evaluate`` alike."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..system import IncompatibleDataError
from .paths import ASSETS
from .prepare import mini_root, prepare
from .recipe import Recipe, load_recipe

__all__ = ["Run", "instantiate", "resolve", "run_recipe"]


@dataclass
class Run:
    """A resolved recipe run: the recipe, its results folder, dataset root and CLI arguments."""

    recipe: Recipe
    out: Path
    root: Path
    mini: bool
    args: list[str]
    overrides: list[str]


def _archive_previous(out: Path) -> None:
    """Move an earlier run's folder aside (results/.archive/) instead of overwriting it."""
    if out.exists() and any(out.iterdir()):
        dest = out.parent / ".archive" / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(dest))
        print(f"[zoo] previous results moved to {dest}", flush=True)


def resolve(
    name: str,
    data: str | None = None,
    gpus: int = 0,
    nodes: int = 1,
    overrides: list[str] | None = None,
    results: str | Path = "results",
    mini_root_dir: str | Path | None = None,
    recipes: str | Path | None = None,
    prepare_data: bool = True,
    out: str | Path | None = None,
) -> Run:
    """A recipe as LightningCLI arguments (see :func:`run_recipe` for the parameters);
    ``prepare_data=False`` neither prepares nor archives anything."""
    recipe = load_recipe(name, recipes)
    out = Path(out) if out else Path(results) / recipe.name
    is_child = "LOCAL_RANK" in os.environ  # a DDP worker re-running this command
    mini = data is None
    if mini:
        root = Path(mini_root_dir) if mini_root_dir else mini_root(recipe.mini_dataset)
        if prepare_data and not is_child and mini_root_dir is None:
            prepare(recipe.mini_dataset, str(root))
    else:
        root = Path(data).expanduser().resolve()
    if prepare_data and not is_child:
        _archive_previous(out)
    args = recipe.cli_args(mini, out)
    if gpus:
        args += ["--config", str(ASSETS / "conf/trainer/gpu.yaml")]
        if gpus * nodes > 1:
            args += ["--config", str(ASSETS / "conf/trainer/ddp.yaml")]
        args += [f"--trainer.devices={gpus}", f"--trainer.num_nodes={nodes}"]
    args += [f"--data.init_args.root={root}", f"--trainer.default_root_dir={out}"]
    overrides = list(overrides or [])
    return Run(recipe, out, root, mini, args + overrides, overrides)


def _stated_data_rate(run: Run) -> tuple[object, str] | None:
    """A sample rate stated for the data (recipe or command line), and where."""
    for i, arg in enumerate(run.overrides):
        key = "--data.init_args.sample_rate"
        if arg.startswith(key + "="):
            return arg.split("=", 1)[1], "the command line (--data.init_args.sample_rate)"
        if arg == key and i + 1 < len(run.overrides):
            return run.overrides[i + 1], "the command line (--data.init_args.sample_rate)"
    data = run.recipe.merged(run.mini).get("data") or {}
    rate = (data.get("init_args") or {}).get("sample_rate")
    return (rate, f"{run.recipe.path} (data.init_args.sample_rate)") if rate else None


def instantiate(run: Run, backbone_config: dict | None = None):
    """Build the recipe's classes (``backbone_config`` replaces its backbone) and check that a
    data rate stated anywhere agrees with the backbone's, which the data follow."""
    import json

    from .lightning import build

    args = list(run.args)
    if backbone_config is not None:
        args.append(f"--model.backbone={json.dumps(backbone_config)}")
    cli = build(args)
    stated = _stated_data_rate(run)
    if stated is not None and int(float(stated[0])) != cli.model.backbone.sample_rate:
        raise IncompatibleDataError(
            f"the data rate {stated[0]} Hz stated in {stated[1]} differs from the rate of the "
            f"backbone {type(cli.model.backbone).__name__}, {cli.model.backbone.sample_rate} Hz "
            "(model.backbone.init_args): state the rate once, in the backbone"
        )
    return cli


def run_recipe(
    name: str,
    data: str | None = None,
    gpus: int = 0,
    nodes: int = 1,
    overrides: list[str] | None = None,
    results: str | Path = "results",
    mini_root_dir: str | Path | None = None,
    recipes: str | Path | None = None,
) -> dict:
    """Prepare → fit → test the best checkpoint → ``results/<name>/metrics.json`` → export.

    Args:
        name: recipe name (``zoo recipes`` lists them) or path to a recipe file.
        data: dataset root; ``None`` runs on the built-in mini dataset.
        gpus, nodes: GPUs per node and nodes (DDP when more than one GPU in all).
        overrides: LightningCLI arguments applied last (``--trainer.max_epochs=3``).
        results: parent folder of the run folder ``<results>/<name>``.
        mini_root_dir: a mini dataset to use as it is (default: ``zoo prepare``'s folder).
        recipes: an extra folder of recipes.

    Returns:
        The results (``metrics.json``) on the rank that wrote them, ``{}`` on other ranks.
    """
    from ..hub.format import backbone_config_from_cli, export_model
    from .results import ResultsWriter, read_results

    run = resolve(name, data, gpus, nodes, overrides, results, mini_root_dir, recipes)
    cli = instantiate(run)
    cli.trainer.callbacks.append(ResultsWriter(str(run.out), recipe=run.recipe.name))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = cli.trainer.checkpoint_callback
    has_best = ckpt is not None and ckpt.best_model_path
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best" if has_best else None)
    if not cli.trainer.is_global_zero:
        return {}
    import yaml

    result = read_results(run.out)
    resolved = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    export_model(
        cli.model.backbone,
        backbone_config_from_cli(cli.config),
        run.out / "model",
        provenance={
            "recipe": run.recipe.name,
            "mini": result["mini"],
            "git_sha": result.get("git_sha"),
            "metrics": result,
            "config": resolved,
        },
    )
    label = (
        " (built-in mini dataset: synthetic, not comparable to published numbers)"
        if result["mini"]
        else ""
    )
    print(
        f"\n[zoo] {run.recipe.name}: test SI-SDR {result.get('si_sdr', float('nan')):.2f} dB, "
        f"SI-SDRi {result.get('si_sdri', float('nan')):.2f} dB over {result.get('n_items')} "
        f"items{label}; wall time {result.get('wall_time_s')} s\n[zoo] results in "
        f"{run.out / 'metrics.json'}; model exported to {run.out / 'model'}",
        flush=True,
    )
    return result
