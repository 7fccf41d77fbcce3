"""The run of a recipe: prepare the data -> fit -> test the best checkpoint -> results ->
export, staged so that nothing is lost (:mod:`zoo.run.folders`). One function
(:func:`run_recipe`); :func:`resolve` turns a recipe into a :class:`Run` and :func:`instantiate`
builds and checks its classes, for the run and for ``zoo evaluate`` alike."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..system import IncompatibleDataError
from .checkpoints import Interrupted, last_checkpoint
from .folders import RunFolder, UnfinishedRunError
from .launch import announce, is_ddp_worker, wait_for_rank_zero, withdraw
from .paths import ASSETS
from .prepare import mini_root, prepare
from .recipe import Recipe, load_recipe

__all__ = ["Run", "instantiate", "is_ddp_worker", "resolve", "run_recipe"]


@dataclass
class Run:
    """A resolved recipe run: the recipe, its (staged) results folder, dataset root, and the
    LightningCLI arguments around the recipe's own layers."""

    recipe: Recipe
    folder: RunFolder
    root: Path
    mini: bool
    extra_args: list[str]
    overrides: list[str] = field(default_factory=list)

    @property
    def out(self) -> Path:
        """The final results folder."""
        return self.folder.out

    @property
    def dir(self) -> Path:
        """Where the run works until it has finished (the staged folder)."""
        return self.folder.stage

    def args(self) -> list[str]:
        """The LightningCLI arguments; writes the recipe's own layers into the run folder."""
        return [
            *self.recipe.cli_args(self.mini, self.dir),
            *self.extra_args,
            f"--trainer.default_root_dir={self.dir}",
            *self.overrides,
        ]


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
    """A recipe as a :class:`Run` (see :func:`run_recipe` for the parameters); nothing is
    written but the mini dataset when it is missing (``prepare_data``)."""
    recipe = load_recipe(name, recipes)
    folder = RunFolder(Path(out) if out else Path(results) / recipe.name)
    mini = data is None
    if mini:
        root = Path(mini_root_dir) if mini_root_dir else mini_root(recipe.mini_dataset)
        if prepare_data and not is_ddp_worker() and mini_root_dir is None:
            prepare(recipe.mini_dataset, str(root))
    else:
        root = Path(data).expanduser().resolve()
    extra = [f"--data.init_args.root={root}"]
    if gpus:
        extra += ["--config", str(ASSETS / "conf/trainer/gpu.yaml")]
        if gpus * nodes > 1:
            extra += ["--config", str(ASSETS / "conf/trainer/ddp.yaml")]
        extra += [f"--trainer.devices={gpus}", f"--trainer.num_nodes={nodes}"]
    return Run(recipe, folder, root, mini, extra, list(overrides or []))


def _stated_data_rate(run: Run) -> tuple[object, str] | None:
    """A sample rate stated for the data (recipe or command line), and where."""
    key = "--data.init_args.sample_rate"
    for i, arg in enumerate(run.overrides):
        if arg.startswith(key + "="):
            return arg.split("=", 1)[1], f"the command line ({key})"
        if arg == key and i + 1 < len(run.overrides):
            return run.overrides[i + 1], f"the command line ({key})"
    data = run.recipe.merged(run.mini).get("data") or {}
    rate = (data.get("init_args") or {}).get("sample_rate")
    return (rate, f"{run.recipe.path} (data.init_args.sample_rate)") if rate else None


def instantiate(run: Run, backbone_config: dict | None = None):
    """Build the recipe's classes (``backbone_config`` replaces its backbone) and check that a
    data rate stated anywhere agrees with the backbone's, which the data follow. When anything
    is refused, the files this wrote into a new run folder are removed again."""
    from .lightning import build

    fresh = not run.dir.exists()
    args = run.args()
    if backbone_config is not None:
        args.append(f"--model.backbone={json.dumps(backbone_config)}")
    try:
        cli = build(args)
        stated = _stated_data_rate(run)
        rate = cli.model.backbone.sample_rate
        if stated is not None and int(float(stated[0])) != rate:
            raise IncompatibleDataError(
                f"the data rate {stated[0]} Hz stated in {stated[1]} differs from the rate of "
                f"the backbone {type(cli.model.backbone).__name__}, {rate} Hz "
                "(model.backbone.init_args): state the rate once, in the backbone"
            )
    except BaseException:
        if fresh and not is_ddp_worker():  # only the recipe files this call wrote
            for name in ("recipe.yaml", "mini.yaml"):
                (run.dir / name).unlink(missing_ok=True)
            if run.dir.exists() and not any(run.dir.iterdir()):
                run.dir.rmdir()
        raise
    return cli


def run_recipe(
    name: str,
    data: str | None = None,
    gpus: int = 0,
    nodes: int = 1,
    overrides: list[str] | None = None,
    results: str | Path = "results",
    resume: bool = False,
    fresh: bool = False,
    mini_root_dir: str | Path | None = None,
    recipes: str | Path | None = None,
) -> dict:
    """Prepare → fit → test the best checkpoint → ``results/<name>/metrics.json`` → export.

    The run works in ``<results>/.runs/<name>/`` under a lock; only when it has finished does
    it replace ``<results>/<name>/`` (whose previous contents move to ``<results>/.archive/``).

    Args:
        name: recipe name (``zoo recipes`` lists them) or path to a recipe file.
        data: dataset root; ``None`` runs on the built-in mini dataset.
        gpus, nodes: GPUs per node and nodes (DDP when more than one GPU in all).
        overrides: LightningCLI arguments applied last (``--trainer.max_epochs=3``).
        results: parent folder of the results folder ``<results>/<name>``.
        resume: continue the unfinished run from its last checkpoint (weights, optimiser,
            scheduler, epoch, step, random state).
        fresh: start anew although an unfinished run is there (it moves to the archive).
        mini_root_dir: a mini dataset to use as it is, without ``--data`` (default: the one
            ``zoo prepare`` writes, prepared when missing).
        recipes: an extra folder of recipes.

    Returns:
        The results (``metrics.json``) on the rank that wrote them, ``{}`` on other ranks.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ..hub.format import backbone_config_from_cli, export_model
    from .results import ResultsWriter, read_results

    if resume and fresh:
        raise ValueError("--resume and --fresh exclude each other: choose one")
    run = resolve(name, data, gpus, nodes, overrides, results, mini_root_dir, recipes)
    worker = is_ddp_worker()
    if worker:  # ranks started with rank 0 (torchrun, srun) wait until it holds the folder
        wait_for_rank_zero(run.dir)
    else:
        run.folder.acquire()
    try:
        if not worker:
            _check_unfinished(run, resume, fresh)
            announce(run.dir)
        ckpt = last_checkpoint(run.dir) if resume else None
        cli = instantiate(run)
        cli.trainer.callbacks.append(ResultsWriter(str(run.dir), recipe=run.recipe.name))
        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, weights_only=True)
        except SIGTERMException as exc:
            saved = next((c.saved for c in cli.trainer.callbacks if hasattr(c, "saved")), None)
            where = f"checkpoint saved at {saved}" if saved else "no checkpoint could be saved"
            raise Interrupted(
                f"{run.recipe.name}: stopped by SIGTERM, {where}; continue with "
                f"`zoo recipe {run.recipe.name} --resume` (make recipe NAME=... RESUME=1)"
            ) from exc
        except BaseException:
            # failed before its first checkpoint (bad data path, a crash): nothing to resume, so
            # the run folder, which holds only what this run wrote, goes
            if not worker and last_checkpoint(run.dir) is None:
                shutil.rmtree(run.dir, ignore_errors=True)
            raise
        best = cli.trainer.checkpoint_callback
        has_best = best is not None and best.best_model_path
        cli.trainer.test(
            cli.model,
            datamodule=cli.datamodule,
            ckpt_path="best" if has_best else None,
            weights_only=True,  # our own checkpoint, still read without unpickling code
        )
        if not cli.trainer.is_global_zero:
            return {}
        import yaml

        result = read_results(run.dir)
        resolved = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
        export_model(
            cli.model.backbone,
            backbone_config_from_cli(cli.config),
            run.dir / "model",
            provenance={
                "recipe": run.recipe.name,
                "mini": result["mini"],
                "git_sha": result.get("git_sha"),
                "metrics": result,
                "config": resolved,
            },
        )
        withdraw(run.dir)
        previous = run.folder.commit()
    finally:
        if not worker:
            withdraw(run.dir)
            run.folder.release()
    label = (
        " (built-in mini dataset: synthetic, not comparable to published numbers)"
        if result["mini"]
        else ""
    )
    print(
        f"\n[zoo] {run.recipe.name}: test SI-SDR {result.get('si_sdr', float('nan')):.2f} dB, "
        f"SI-SDRi {result.get('si_sdri', float('nan')):.2f} dB over {result.get('n_items')} "
        f"items{label}; wall time {result.get('wall_time_s')} s\n[zoo] results in "
        f"{run.out / 'metrics.json'}; model exported to {run.out / 'model'}"
        + (f"\n[zoo] the previous results moved to {previous}" if previous else ""),
        flush=True,
    )
    return result


def _check_unfinished(run: Run, resume: bool, fresh: bool) -> None:
    name = run.recipe.name
    if run.folder.unfinished():
        if fresh:
            print(f"[zoo] unfinished run moved to {run.folder.archive_unfinished()}", flush=True)
        elif not resume:
            ckpt = last_checkpoint(run.dir)
            state = f"last checkpoint {ckpt}" if ckpt else "no checkpoint yet"
            raise UnfinishedRunError(
                f"an unfinished run of {name} is in {run.dir} ({state}): continue it with "
                f"`zoo recipe {name} --resume`, or start anew with `zoo recipe {name} --fresh` "
                "(the unfinished run then moves to the archive)"
            )
        elif last_checkpoint(run.dir) is None:
            raise UnfinishedRunError(
                f"the unfinished run of {name} in {run.dir} has no checkpoint to resume from: "
                f"start anew with `zoo recipe {name} --fresh`"
            )
    elif resume:
        raise UnfinishedRunError(f"no unfinished run of {name} in {run.dir} to resume")
