"""The one build path: a recipe, resolved into a :class:`Run`, becomes (model, datamodule,
trainer) through :func:`build`, with an optional ready backbone. Training
(:mod:`zoo.run.train`), evaluation and the oracles (:mod:`zoo.run.evaluate`) are short scripts
over it; nothing else parses a recipe or makes a trainer.

:class:`ZooCLI` is the LightningCLI the zoo runs (``zoo fit`` too): SeparationSystem + any
zoo datamodule, the data's sample rate linked to the backbone's (a recipe states it once), and
a trainer made resumable (:mod:`zoo.run.checkpoints`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from ..backbones.base import Backbone
from ..system import IncompatibleDataError, SeparationSystem
from .folders import RunFolder
from .launch import is_ddp_worker
from .paths import ASSETS
from .prepare import mini_root, prepare
from .recipe import Recipe, load_recipe

__all__ = ["Built", "Run", "ZooCLI", "build", "option_value", "resolve"]


class ZooCLI(LightningCLI):
    """LightningCLI over :class:`~zoo.system.SeparationSystem` and any LightningDataModule.

    ``data.init_args.sample_rate`` follows ``model.backbone.sample_rate`` when the classes are
    instantiated; a different rate stated for the data is reported by :func:`build` and by the
    system at setup. ``backbone``: a ready network to use instead of building the configured
    one (the configuration still records its class and arguments).
    """

    def __init__(self, *args, backbone: Backbone | None = None, **kwargs):
        self._ready = backbone
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(
            SeparationSystem, L.LightningDataModule, *args, subclass_mode_data=True, **kwargs
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments(
            "model.backbone.sample_rate", "data.init_args.sample_rate", apply_on="instantiate"
        )

    def instantiate_classes(self) -> None:
        if self._ready is None:
            return super().instantiate_classes()
        from lightning.pytorch.cli import SaveConfigCallback

        config = self.config
        self._dump_config()  # the model's saved hyperparameters come from the description
        self.config = config.clone()  # the ready network in place of its description
        self.config["model.backbone"] = self._ready
        try:
            super().instantiate_classes()
        finally:
            self.config = config
        for callback in self.trainer.callbacks:  # the record keeps the description
            if isinstance(callback, SaveConfigCallback):
                callback.config = config

    def instantiate_trainer(self, **kwargs):
        """The trainer, made resumable: atomic checkpoint writes, random state restored on
        resume, a checkpoint on SIGTERM (:mod:`zoo.run.checkpoints`)."""
        from .checkpoints import AtomicCheckpointIO, ResumableRandomState, SaveOnSigterm

        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks += [ResumableRandomState(), SaveOnSigterm()]
        return trainer


@dataclass
class Run:
    """A resolved recipe run: the recipe, its (staged) results folder, dataset root, and the
    LightningCLI arguments around the recipe's own layers.

    Attributes:
        evaluate: the recipe's test stage for another model (``zoo evaluate``, the oracles):
            its trainer on one device, nothing saved but the results
            (``conf/trainer/evaluate.yaml``).
    """

    recipe: Recipe
    folder: RunFolder
    root: Path
    mini: bool
    extra_args: list[str]
    overrides: list[str] = field(default_factory=list)
    evaluate: bool = False

    @property
    def out(self) -> Path:
        """The final results folder."""
        return self.folder.out

    @property
    def dir(self) -> Path:
        """Where the run works until it has finished (the staged folder)."""
        return self.folder.stage

    def to(self, out: str | Path) -> Run:
        """The same run into another results folder."""
        return replace(self, folder=RunFolder(Path(out)), overrides=list(self.overrides))

    def args(self) -> list[str]:
        """The LightningCLI arguments: the recipe's layers, then the launch's, the command
        line's overrides last."""
        evaluate = ["--config", str(ASSETS / "conf/trainer/evaluate.yaml")] if self.evaluate else []
        return [
            *self.recipe.cli_args(self.mini),
            *self.extra_args,
            *evaluate,
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
    evaluate: bool = False,
) -> Run:
    """A recipe as a :class:`Run` (see :func:`zoo.run.train.run_recipe` for the parameters);
    nothing is written but the mini dataset when it is missing (``prepare_data``)."""
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
    return Run(recipe, folder, root, mini, extra, list(overrides or []), evaluate)


@dataclass
class Built:
    """What :func:`build` makes of a run."""

    model: SeparationSystem
    datamodule: L.LightningDataModule
    trainer: L.Trainer
    cli: ZooCLI

    def resolved_config(self) -> dict:
        """The whole resolved LightningCLI configuration, as plain data (the model's record)."""
        import yaml

        return yaml.safe_load(self.cli.parser.dump(self.cli.config, skip_none=False))

    def backbone_config(self) -> dict:
        """``{"class_path", "init_args"}`` of the backbone (the zoo format's description)."""
        bb = self.cli.config.model.backbone
        d = bb.as_dict() if hasattr(bb, "as_dict") else dict(bb)
        return {"class_path": d["class_path"], "init_args": dict(d.get("init_args") or {})}


def build(
    run: Run,
    backbone: dict | None = None,
    ready: Backbone | None = None,
    callbacks: list[L.Callback] = (),
) -> Built:
    """Build a run's (model, datamodule, trainer) without running anything.

    Args:
        run: the resolved recipe run.
        backbone: ``{"class_path", "init_args"}`` replacing the recipe's backbone (complete:
            every argument, as :func:`zoo.run.evaluate.complete_config` gives).
        ready: a ready network of that description (weights loaded) used as it is instead of
            building it again.
        callbacks: added to the trainer's (e.g. the results writer).

    A data rate stated anywhere that differs from the backbone's, which the data follow, is
    refused here, naming both and where the data's was stated.
    """
    args = run.args()
    if backbone is not None:
        args.append(f"--model.backbone={json.dumps(backbone)}")
    cli = ZooCLI(args=args, run=False, backbone=ready)
    stated = _stated_data_rate(run)
    rate = cli.model.backbone.sample_rate
    if stated is not None and int(float(stated[0])) != rate:
        raise IncompatibleDataError(
            f"the data rate {stated[0]} Hz stated in {stated[1]} differs from the rate of "
            f"the backbone {type(cli.model.backbone).__name__}, {rate} Hz "
            "(model.backbone.init_args): state the rate once, in the backbone"
        )
    cli.trainer.callbacks.extend(callbacks)
    return Built(cli.model, cli.datamodule, cli.trainer, cli)


def option_value(args: list[str], name: str) -> str | None:
    """The value of option ``name`` in command-line ``args`` (``--name=v`` or ``--name v``)."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _stated_data_rate(run: Run) -> tuple[object, str] | None:
    """A sample rate stated for the data (recipe or command line), and where."""
    key = "--data.init_args.sample_rate"
    if (value := option_value(run.overrides, key)) is not None:
        return value, f"the command line ({key})"
    data = run.recipe.merged(run.mini).get("data") or {}
    rate = (data.get("init_args") or {}).get("sample_rate")
    return (rate, f"{run.recipe.path} (data.init_args.sample_rate)") if rate else None
