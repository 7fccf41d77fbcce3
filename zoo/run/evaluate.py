"""``zoo evaluate`` and ``zoo oracle``: any separator scored by a recipe's own test stage.

There is one evaluation path: the recipe's data, test split and test settings (matching, BSS
Eval, chunking) are built exactly as when the recipe runs, its backbone is replaced by the
model being scored, and ``trainer.test`` writes the same ``metrics.json`` / ``test_items.csv``.
Adding a dataset therefore needs a datamodule, conf fragments and recipes, nothing here.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

__all__ = [
    "backbone_changes",
    "complete_config",
    "evaluate",
    "model_name",
    "run_oracles",
    "test_with_recipe",
]

KINDS = ("ibm", "irm", "wiener", "mixture")


def complete_config(config: dict) -> dict:
    """``{"class_path", "init_args"}`` with every init argument the class has (defaults filled
    in), so that it replaces a recipe's backbone instead of merging into its arguments."""
    from ..hub.format import backbone_class

    cls = backbone_class(config["class_path"])
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k != "self" and p.default is not inspect.Parameter.empty
    }
    return {"class_path": config["class_path"], "init_args": {**defaults, **config["init_args"]}}


def test_with_recipe(
    recipe: str,
    backbone_config: dict,
    out: str | Path,
    data: str | None = None,
    split: str = "test",
    limit: int | None = None,
    state: dict | None = None,
    extra: dict | None = None,
    sdr: bool | None = None,
    recipes: str | Path | None = None,
) -> dict:
    """Run ``recipe``'s test stage with the backbone ``backbone_config`` (weights ``state``).

    Args:
        recipe: the recipe whose data and test settings are used.
        backbone_config: ``{"class_path", "init_args"}`` of the backbone to test.
        out: results folder (``metrics.json``, ``test_items.csv``).
        data: dataset root; ``None``: the recipe's built-in mini dataset.
        split: the datamodule's test split (``test``; ``dev`` for Libri2Mix, ``valid`` for
            MUSDB18).
        limit: score the first N items only.
        state: weights for the backbone (strict load); ``None``: as built.
        extra: recorded in the results.
        sdr: add BSS Eval SDR / SDRi (default: unless the recipe scores BSS Eval v4 already).
    """
    import json

    import lightning as L

    from .results import ResultsWriter, read_results
    from .train import instantiate, resolve

    overrides = [f"--data.init_args.test_split={split}"]
    if limit is not None:
        overrides.append(f"--data.init_args.limit_test_items={limit}")
    backbone_config = complete_config(backbone_config)
    sources = backbone_config["init_args"].get("sources")
    run = resolve(recipe, data, out=out, recipes=recipes, prepare_data=False)
    if sources:  # named outputs: the data's references are those targets, in that order
        data_cls = _data_class(run)
        if "targets" not in inspect.signature(data_cls.__init__).parameters:
            raise ValueError(
                f"the model outputs named targets {list(sources)} but recipe {run.recipe.name}'s "
                f"data ({data_cls.__name__}) have anonymous sources: evaluate it with a recipe "
                "on a dataset with those targets"
            )
        overrides.append(f"--data.init_args.targets={json.dumps(list(sources))}")
    run = resolve(recipe, data, overrides=overrides, out=out, recipes=recipes)
    run.folder.acquire()
    try:
        if run.folder.unfinished():  # a crashed evaluation's files: kept in the archive
            run.folder.archive_unfinished()
        cli = instantiate(run, backbone_config)
        system = cli.model
        if state is not None:
            system.backbone.load_state_dict(state, strict=True)
        system.report_sdr = (not system.bss_eval) if sdr is None else sdr
        writer = ResultsWriter(str(run.dir), recipe=run.recipe.name, extra=extra)
        trainer = L.Trainer(
            accelerator="auto",
            devices=1,
            logger=False,
            callbacks=[writer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.test(system, datamodule=cli.datamodule, verbose=False)
        previous = run.folder.commit()
    finally:
        run.folder.release()
    if previous:
        print(f"[zoo] the previous results in {run.out} moved to {previous}", flush=True)
    return read_results(run.out)


def _data_class(run) -> type:
    import importlib

    class_path = (run.recipe.merged(run.mini).get("data") or {}).get("class_path", "")
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def backbone_changes(config: dict, items: list[str]) -> dict:
    """``NAME=VALUE`` arguments (YAML values) checked against the backbone's init arguments."""
    import yaml

    from ..hub.format import backbone_class

    cls = backbone_class(config["class_path"])
    known = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(
                f"--set {item!r}: expected NAME=VALUE with NAME one of {cls.__name__}'s "
                f"arguments ({', '.join(known)})"
            )
        out[key] = yaml.safe_load(value)
    return out


def model_name(model: str, config: dict) -> str:
    """A readable name for a loaded model: its registry name, else ``<recipe>-<sha>`` from a
    zoo folder's provenance, else the file or folder name."""
    p = Path(str(model))
    if not p.exists():
        return str(model)  # a registry name
    recipe = (config.get("provenance") or {}).get("recipe")
    sha = (config.get("weights_sha256") or "")[:8]
    return f"{recipe}-{sha}" if recipe and sha else p.name if p.name != "model" else p.parent.name


def evaluate(
    model: str,
    recipe: str | None = None,
    data: str | None = None,
    split: str = "test",
    limit: int | None = None,
    out: str | None = None,
    results: str = "results",
    download: bool = False,
    set: list[str] | None = None,
) -> dict:
    """Score a separator exactly as a recipe's test stage scores its own model.

    Args:
        model: a zoo model folder, a peer checkpoint (Asteroid, torchaudio, Open-Unmix) or a
            registry name (``zoo list``).
        recipe: whose data and test settings to use; default: the recipe in the model's
            provenance (a converted peer model must name one).
        data: dataset root (a Libri2Mix or MUSDB18(-HQ) folder, as the recipe expects);
            default: the recipe's built-in mini dataset.
        split: the subset to score (``test``; ``dev`` for Libri2Mix, ``valid`` for MUSDB18).
        limit: score the first N items only.
        out: results folder (default ``<results>/eval-<model>-<recipe>``).
        results: parent of the default results folder.
        download: fetch a registered model that is not in the cache yet.
        set: backbone arguments changed for this test, ``NAME=VALUE`` (YAML values), e.g.
            ``mask=ibm`` for AudioSlots' binary masks; recorded in the results and the folder
            name.
    """
    from ..eval.metrics import macs_per_second
    from ..hub.api import load

    sep = load(model, download=download)
    recipe = recipe or (sep.config.get("provenance") or {}).get("recipe")
    if not recipe:
        raise ValueError(
            f"{model}: its config names no recipe (a converted peer model): pass --recipe with "
            "the recipe whose test to run (`zoo recipes` lists them)"
        )
    name = model_name(model, sep.config)
    changed = backbone_changes(sep.config["backbone"], set or [])
    config = {**sep.config["backbone"]}
    config["init_args"] = {**config["init_args"], **changed}
    extra = {"model": name, "macs_per_second": macs_per_second(sep.backbone)}
    suffix = "".join(f"-{k}={v}" for k, v in changed.items())
    if changed:
        extra["backbone_changes"] = changed
    return test_with_recipe(
        recipe,
        config,
        out or Path(results) / f"eval-{name}-{Path(recipe).stem}{suffix}",
        data,
        split,
        limit,
        state=sep.backbone.state_dict(),
        extra=extra,
    )


def run_oracles(
    recipe: str,
    data: str | None = None,
    kinds: tuple[str, ...] = KINDS,
    n_fft: int = 256,
    hop: int = 64,
    results: str = "results",
    limit: int | None = None,
    chunk_seconds: float | None = None,
) -> list[dict]:
    """Oracle-mask reference rows (IBM, IRM, Wiener-like, the mixture itself) on a recipe's
    test data and settings, into ``<results>/<recipe>-oracle-<kind>/``.

    Args:
        recipe: whose data and test settings to use (e.g. ``libri2mix_pit``, ``musdb18_umx``).
        data: dataset root; default: the recipe's built-in mini dataset.
        kinds: which oracles.
        n_fft, hop: STFT of the masks (Hann window), at the recipe's rate.
        results: parent folder of the results.
        limit: score the first N items only.
        chunk_seconds: mask clip by clip on non-overlapping clips of this length (the chunked
            pipeline of AudioSlots); default: whole items.
    """
    from .train import instantiate, resolve

    with tempfile.TemporaryDirectory() as tmp:  # the recipe's own data settings and rate
        probe = instantiate(resolve(recipe, data, out=tmp))
    dm, rate = probe.datamodule, probe.model.backbone.sample_rate
    rows = []
    for kind in kinds:
        config = {
            "class_path": "zoo.backbones.OracleMask",
            "init_args": {
                "kind": kind,
                "sample_rate": rate,
                "n_src": dm.n_src,
                "n_fft": n_fft,
                "hop": hop,
                "sources": dm.source_names,
                "chunk_seconds": chunk_seconds,
            },
        }
        out = Path(results) / f"{Path(recipe).stem}-oracle-{kind}"
        extra = {"model": f"oracle-{kind}", "oracle": True}
        rows.append(test_with_recipe(recipe, config, out, data, limit=limit, extra=extra))
    return rows
