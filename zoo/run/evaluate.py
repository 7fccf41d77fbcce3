"""``zoo evaluate`` and ``zoo oracle``: any separator scored by a recipe's own test stage.

There is one evaluation path: the recipe is resolved once, and its data, test split and test
settings (matching, BSS Eval, chunking) are built by the same :func:`zoo.run.build.build` as
when the recipe runs, with the model being scored in place of the recipe's backbone and the
recipe's trainer on one device with nothing saved (``conf/trainer/evaluate.yaml``);
``trainer.test`` writes the same ``metrics.json`` / ``test_items.csv``. Adding a dataset
therefore needs a datamodule, conf fragments and recipes, nothing here.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

__all__ = [
    "backbone_changes",
    "complete_config",
    "evaluate",
    "model_name",
    "resolve_test",
    "run_oracles",
    "test_with_recipe",
]

KINDS = ("ibm", "irm", "wiener", "mixture")


def complete_config(config: dict) -> dict:
    """``{"class_path", "init_args"}`` with every init argument the class has (defaults filled
    in), so that it replaces a recipe's backbone instead of merging into its arguments."""
    from ..hub.folder import backbone_class

    cls = backbone_class(config["class_path"])
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k != "self" and p.default is not inspect.Parameter.empty
    }
    return {"class_path": config["class_path"], "init_args": {**defaults, **config["init_args"]}}


def resolve_test(
    recipe: str,
    out: str | Path | None = None,
    data: str | None = None,
    split: str = "test",
    limit: int | None = None,
    sources: list[str] | None = None,
    recipes: str | Path | None = None,
):
    """``recipe``'s test stage as a :class:`~zoo.run.build.Run` for another model (resolved
    once): the split and item limit to score and, for a model with named outputs, the data's
    targets in its output order."""
    from .build import resolve

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1 (the first N items), got {limit}")
    run = resolve(recipe, data, out=out, recipes=recipes, prepare_data=False, evaluate=True)
    run.overrides.append(f"--data.init_args.test_split={split}")
    if limit is not None:
        run.overrides.append(f"--data.init_args.limit_test_items={limit}")
    if sources:  # named outputs: the data's references are those targets, in that order
        data_cls = _data_class(run)
        if "targets" not in inspect.signature(data_cls.__init__).parameters:
            raise ValueError(
                f"the model outputs named targets {list(sources)} but recipe {run.recipe.name}'s "
                f"data ({data_cls.__name__}) have anonymous sources: evaluate it with a recipe "
                "on a dataset with those targets"
            )
        run.overrides.append(f"--data.init_args.targets={json.dumps(list(sources))}")
    return run


def test_with_recipe(
    run, backbone_config: dict, ready=None, extra: dict | None = None, sdr: bool | None = None
) -> dict:
    """Run a resolved test stage (:func:`resolve_test`) with the backbone ``backbone_config``
    into ``run.out`` (``metrics.json``, ``test_items.csv``).

    Args:
        run: from :func:`resolve_test`.
        backbone_config: ``{"class_path", "init_args"}`` of the backbone to test.
        ready: that backbone, built and with its weights (``None``: built from the config).
        extra: recorded in the results.
        sdr: add BSS Eval SDR / SDRi (default: unless the recipe scores BSS Eval v4 already).
    """
    from .build import build
    from .results import ResultsWriter, read_results
    from .session import run_session

    with run_session(run) as session:
        writer = ResultsWriter(str(run.dir), recipe=run.recipe.name, extra=extra)
        built = build(run, complete_config(backbone_config), ready=ready, callbacks=[writer])
        system = built.model
        system.report_sdr = (not system.bss_eval) if sdr is None else sdr
        built.trainer.test(system, datamodule=built.datamodule, verbose=False)
    if session.previous:
        print(f"[zoo] the previous results in {run.out} moved to {session.previous}", flush=True)
    return read_results(run.out)


def _data_class(run) -> type:
    import importlib

    class_path = (run.recipe.merged(run.mini).get("data") or {}).get("class_path", "")
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def backbone_changes(config: dict, items: list[str]) -> dict:
    """``NAME=VALUE`` arguments (YAML values) checked against the backbone's init arguments."""
    import yaml

    from ..hub.folder import backbone_class

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
    from ..hub.folder import build_backbone

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
    ready = sep.backbone
    if changed:  # another configuration of the same weights
        ready = build_backbone(config["class_path"], config["init_args"])
        ready.load_state_dict(sep.backbone.state_dict(), strict=True)
    extra = {"model": name, "macs_per_second": macs_per_second(ready)}
    suffix = "".join(f"-{k}={v}" for k, v in changed.items())
    if changed:
        extra["backbone_changes"] = changed
    out = out or Path(results) / f"eval-{name}-{Path(recipe).stem}{suffix}"
    run = resolve_test(recipe, out, data, split, limit, config["init_args"].get("sources"))
    return test_with_recipe(run, config, ready=ready, extra=extra)


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
    from .build import build

    run = resolve_test(recipe, data=data, limit=limit)  # once, for every oracle
    probe = build(run)  # the recipe's own rate, sources and names (nothing is written)
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
        out = Path(results) / f"{run.recipe.name}-oracle-{kind}"
        # the masks' settings: the same oracle at another STFT is another number
        settings = {"n_fft": n_fft, "hop": hop, "chunk_seconds": chunk_seconds}
        extra = {"model": f"oracle-{kind}", "oracle": True, "oracle_settings": settings}
        rows.append(test_with_recipe(run.to(out), config, extra=extra))
    return rows
