"""The ``zoo`` command: LightningCLI for fit/validate/test, plus recipe and prepare sub-commands.

``zoo recipe NAME [--data PATH] [--gpus N] [--nodes N] [LightningCLI overrides...]`` runs a recipe
end to end: prepare the built-in mini data when no ``--data`` is given, fit, test the best
checkpoint, and write ``results/NAME/metrics.json`` + ``test_items.csv``.

A recipe (``recipes/NAME.yaml``) is data: a ``compose`` list of ``conf/`` fragments, then the
recipe's own LightningCLI settings, then an optional ``mini`` block of overrides applied only on
the built-in mini dataset (the 2-core, 10-minute budget). ``recipe`` holds metadata
(``mini_dataset``: which ``zoo prepare`` target provides the mini data).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
MINI_DATASETS = {"libri2mix-mini": "mini/Libri2Mix", "musdb18-mini": "mini/MUSDB18-HQ"}


def data_dir() -> Path:
    """Where the built-in mini datasets live: ``$ZOO_DATA_DIR``, else ``data/`` in the checkout."""
    return Path(os.environ.get("ZOO_DATA_DIR") or REPO / "data").expanduser()

__all__ = [
    "main",
    "run_recipe",
    "recipe_args",
    "available_recipes",
    "load_recipe",
    "prepare",
]


class RecipeError(ValueError):
    """A recipe that does not exist or is malformed."""


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_recipe(name: str) -> dict:
    """Read ``recipes/<name>.yaml``; an unknown name lists the recipes that exist."""
    path = Path(name) if name.endswith(".yaml") else RECIPES / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(
            f"no recipe named {name!r} (looked for {path}); available recipes: "
            + ", ".join(available_recipes())
        )
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping")
    for frag in [*spec.get("compose", []), *(spec.get("mini") or {}).get("compose", [])]:
        if not (REPO / frag).is_file():
            raise RecipeError(f"{path}: composed fragment {frag} does not exist under {REPO}")
    return spec


def _cli_class():
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from .system import SeparationSystem

    class ZooCLI(LightningCLI):
        """LightningCLI over SeparationSystem and any LightningDataModule."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            kwargs.setdefault("auto_configure_optimizers", False)
            super().__init__(
                SeparationSystem, L.LightningDataModule, *args, subclass_mode_data=True, **kwargs
            )

    return ZooCLI


def __getattr__(name):  # ZooCLI without importing lightning at `import zoo.cli`
    if name == "ZooCLI":
        return _cli_class()
    raise AttributeError(name)


def prepare(target: str, root: str | None = None, force: bool = False) -> Path:
    """Build a built-in mini dataset (``libri2mix-mini``, ``musdb18-mini``) in the real on-disk
    format."""
    if target not in MINI_DATASETS:
        raise ValueError(
            f"unknown dataset {target!r}; `zoo prepare` knows: {sorted(MINI_DATASETS)}"
        )
    root = Path(root or data_dir() / MINI_DATASETS[target])
    t0 = time.time()
    if target == "libri2mix-mini":
        from .data.mini import prepare_libri2mix_mini

        prepare_libri2mix_mini(root, force=force)
    elif target == "musdb18-mini":
        from .data.musdb_mini import prepare_musdb18_mini

        prepare_musdb18_mini(root, force=force)
    print(f"[zoo] {target} ready at {root} ({time.time() - t0:.1f} s)", flush=True)
    return root


def _archive_previous(out: Path) -> None:
    """Move an earlier run's folder aside (results/.archive/) instead of overwriting it."""
    if out.exists() and any(out.iterdir()):
        dest = out.parent / ".archive" / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(dest))
        print(f"[zoo] previous results moved to {dest}", flush=True)


def recipe_args(
    name: str,
    data: str | None = None,
    gpus: int = 0,
    nodes: int = 1,
    overrides: list[str] | None = None,
    results: str | Path = "results",
    mini_root: str | Path | None = None,
    prepare_data: bool = True,
) -> dict:
    """Resolve a recipe into LightningCLI arguments (see :func:`run_recipe` for the parameters).

    Returns a dict with ``args`` (the LightningCLI argument list), ``name``, ``out`` (run folder),
    ``mini`` (bool) and ``root`` (dataset root). Writes the recipe body into the run folder.
    """
    spec = load_recipe(name)
    name = Path(name).stem
    meta = spec.pop("recipe", {}) or {}
    compose = spec.pop("compose", [])
    mini_overrides = dict(spec.pop("mini", None) or {})
    out = Path(results) / name
    is_child = "LOCAL_RANK" in os.environ  # a DDP worker re-running this command
    use_mini = data is None
    if use_mini:
        target = meta.get("mini_dataset", "libri2mix-mini")
        if mini_root is not None:
            root = Path(mini_root)
        else:
            root = data_dir() / MINI_DATASETS[target]
            if prepare_data and not is_child:
                prepare(target, str(root))
    else:
        root = Path(data).expanduser().resolve()
    if prepare_data and not is_child:
        _archive_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    # Recipe body and mini overrides go to files in the run folder: a record of what ran.
    (out / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    args = [a for frag in compose for a in ("--config", str(REPO / frag))]
    args += ["--config", str(out / "recipe.yaml")]
    if use_mini and mini_overrides:
        for frag in mini_overrides.pop("compose", []):
            args += ["--config", str(REPO / frag)]
        if mini_overrides:
            (out / "mini.yaml").write_text(yaml.safe_dump(mini_overrides, sort_keys=False))
            args += ["--config", str(out / "mini.yaml")]
    args += [f"--data.init_args.root={root}", f"--trainer.default_root_dir={out}"]
    if gpus:
        args += [
            "--trainer.accelerator=gpu",
            f"--trainer.devices={gpus}",
            f"--trainer.num_nodes={nodes}",
        ]
        if gpus * nodes > 1:
            args += ["--trainer.strategy=ddp"]
    args += list(overrides or [])
    from .data.mini import is_mini_dataset

    # Results on the built-in data are labelled mini even when it is passed as DATA=.
    is_mini_data = use_mini or is_mini_dataset(root)
    return {"args": args, "name": name, "out": out, "mini": is_mini_data, "root": root}


def run_recipe(
    name: str,
    data: str | None = None,
    gpus: int = 0,
    nodes: int = 1,
    overrides: list[str] | None = None,
    results: str | Path = "results",
    mini_root: str | Path | None = None,
) -> dict:
    """Prepare → fit → test the best checkpoint → ``results/<name>/metrics.json``.

    Args:
        name: recipe name (``recipes/<name>.yaml``) or path to a recipe file.
        data: dataset root; ``None`` runs on the built-in mini dataset.
        gpus, nodes: GPUs per node and nodes (DDP when more than one GPU in all).
        overrides: LightningCLI arguments applied last (``--trainer.max_epochs=3``).
        results: parent folder of the run folder ``<results>/<name>``.
        mini_root: where the mini dataset lives (default ``<data_dir()>/mini/...``); an existing
            mini set there is used as it is.
    """
    r = recipe_args(name, data, gpus, nodes, overrides, results, mini_root)
    name, out, use_mini = r["name"], r["out"], r["mini"]

    from .eval.results import ResultsWriter

    cli = _cli_class()(args=r["args"], run=False)
    writer = ResultsWriter(str(out), recipe=name, mini=use_mini)
    cli.trainer.callbacks.append(writer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    has_best = cli.trainer.checkpoint_callback and cli.trainer.checkpoint_callback.best_model_path
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best" if has_best else None)
    result = writer.last or {}
    if cli.trainer.is_global_zero:
        from .hub.format import backbone_config_from_cli, export_model

        resolved = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
        export_model(
            cli.model.backbone,
            backbone_config_from_cli(cli.config),
            out / "model",
            provenance={
                "recipe": name,
                "mini": use_mini,
                "git_sha": result.get("git_sha"),
                "metrics": result,
                "config": resolved,
            },
        )
        label = (
            " (built-in mini dataset: synthetic, not comparable to published numbers)"
            if use_mini
            else ""
        )
        print(
            f"\n[zoo] {name}: test SI-SDR {result.get('si_sdr', float('nan')):.2f} dB, "
            f"SI-SDRi {result.get('si_sdri', float('nan')):.2f} dB over {result.get('n_items')} "
            f"items{label}; wall time {result.get('wall_time_s')} s\n[zoo] results in "
            f"{out / 'metrics.json'}; model exported to {out / 'model'}",
            flush=True,
        )
    return result


def _recipe_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="zoo recipe", description=run_recipe.__doc__)
    p.add_argument("name", help="recipe name (recipes/<name>.yaml)")
    p.add_argument("--data", help="dataset root (default: the built-in mini dataset)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per node (0: CPU)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--results", default="results", help="results folder")
    p.add_argument(
        "--data-dir",
        help="where the built-in mini datasets are written/read ($ZOO_DATA_DIR; default data/)",
    )
    a, rest = p.parse_known_args(argv)
    if a.data_dir:  # DDP workers re-run this command line, so they see it too
        os.environ["ZOO_DATA_DIR"] = a.data_dir
    try:
        run_recipe(a.name, a.data or None, a.gpus, a.nodes, rest, a.results)
    except (ValueError, FileNotFoundError) as exc:
        print(f"zoo recipe: error: {exc}", file=sys.stderr)
        return 2
    return 0


def export_checkpoint(
    ckpt: str | Path, out_dir: str | Path, config: str | Path | None = None
) -> Path:
    """Export the backbone of a Lightning checkpoint in the zoo format.

    The backbone's class and arguments come from the LightningCLI ``config.yaml`` saved next to
    the run (``<version>/config.yaml`` for ``<version>/checkpoints/x.ckpt``) unless ``config`` names
    one. The checkpoint is read with ``torch.load(weights_only=True)``: no code is unpickled.
    """
    import torch

    from .eval.results import git_sha
    from .hub.format import build_backbone, export_model

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    cfg_path = Path(config) if config else ckpt.parent.parent / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"no training config at {cfg_path}: pass --config with the run's config.yaml"
        )
    cfg = yaml.safe_load(cfg_path.read_text())
    try:
        bb = cfg["model"]["backbone"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{cfg_path} has no model.backbone section") from exc
    backbone = build_backbone(bb["class_path"], bb.get("init_args") or {})
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "backbone."
    backbone.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True
    )
    metrics = ckpt.parents[3] / "metrics.json" if len(ckpt.parents) > 3 else None
    return export_model(
        backbone,
        bb,
        out_dir,
        provenance={
            "checkpoint": str(ckpt.resolve()),
            "config": cfg,
            "git_sha": git_sha(),
            "metrics": json.loads(metrics.read_text()) if metrics and metrics.is_file() else None,
        },
    )


def _export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="zoo export", description=export_checkpoint.__doc__)
    p.add_argument("checkpoint")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--config", help="the run's LightningCLI config.yaml")
    a = p.parse_args(argv)
    try:
        out = export_checkpoint(a.checkpoint, a.out, a.config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"zoo export: error: {exc}", file=sys.stderr)
        return 2
    print(f"[zoo] exported to {out}")
    return 0


def separate_file(
    model: str,
    inputs: list[str],
    out_dir: str | Path,
    chunk_seconds: float = 8.0,
    overlap: float = 0.25,
    download: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Separate audio files with a loadable model; writes ``<out>/<stem>_<source>.wav``."""
    import soundfile as sf
    from tqdm import tqdm

    import zoo

    from .data.audio import load_audio

    sep = zoo.load(model, download=download)
    out = Path(out_dir)
    written = []
    for path in map(Path, inputs):
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        targets = [out / f"{path.stem}_{name}.wav" for name in sep.sources]
        clash = [str(t) for t in targets if t.exists()]
        if clash and not overwrite:
            raise FileExistsError(f"would overwrite {', '.join(clash)} (pass --overwrite)")
        wav, sr = load_audio(path)  # (C, T); names the file if unreadable or non-finite
        n_channels, n_frames = wav.shape
        bar = tqdm(total=n_frames, unit="sample", unit_scale=True, desc=path.name, disable=quiet)

        def progress(done, total, bar=bar, n=n_frames):
            bar.n = int(done / total * n)
            bar.refresh()

        x = sep.prepare(wav, sr)  # at the model's rate: the long input is freed next
        del wav
        est = sep.separate_prepared(x, chunk_seconds, overlap, progress)  # (S, C', t)
        bar.close()
        out.mkdir(parents=True, exist_ok=True)
        for target, e in zip(targets, est, strict=True):
            tmp = target.with_suffix(".part.wav")
            with sf.SoundFile(str(tmp), "w", sr, n_channels, subtype="FLOAT") as f:
                for piece in sep.restore(e, sr, n_frames, n_channels):  # block by block
                    f.write(piece.T.contiguous().numpy())
            os.replace(tmp, target)
            written.append(target)
    return written


def _separate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="zoo separate", description=separate_file.__doc__)
    p.add_argument("model", help="zoo model folder or registry name (zoo list)")
    p.add_argument("inputs", nargs="+", help="audio files")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--chunk", type=float, default=8.0, help="chunk length in seconds (0: one pass)")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--download", action="store_true", help="fetch a registered model if needed")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        files = separate_file(
            a.model, a.inputs, a.out, a.chunk or None, a.overlap, a.download, a.overwrite
        )
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"zoo separate: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(str(f) for f in files))
    return 0


def _evaluate_main(argv: list[str]) -> int:
    from .eval.evaluate import evaluate

    p = argparse.ArgumentParser(prog="zoo evaluate", description=evaluate.__doc__)
    p.add_argument("model", help="zoo model folder, peer checkpoint or registry name")
    p.add_argument("--data", required=True, help="the Libri2Mix or MUSDB18(-HQ) folder")
    p.add_argument("--task", default="sep_clean", help="Libri2Mix task")
    p.add_argument("--chunk-seconds", type=float, help="separate songs in chunks (music)")
    p.add_argument("--split", default="test")
    p.add_argument("--mode", default="min")
    p.add_argument("-o", "--out", help="results folder (default results/eval-<model>)")
    p.add_argument("--limit", type=int, help="score only the first N items")
    p.add_argument("--download", action="store_true")
    a = p.parse_args(argv)
    from .eval.evaluate import is_musdb_root

    music = is_musdb_root(a.data)
    out = a.out or f"results/eval-{Path(a.model).name}-{'musdb18' if music else a.task}"
    try:
        r = evaluate(
            a.model, a.data, out, a.task, a.split, a.mode, a.download, a.limit, a.chunk_seconds
        )
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"zoo evaluate: error: {exc}", file=sys.stderr)
        return 2
    if music:
        per = ", ".join(f"{k} {v['sdr']:.2f}" for k, v in r.get("targets", {}).items())
        print(f"[zoo] {a.model}: SDR {r.get('sdr', float('nan')):.2f} dB ({per}) -> {out}")
    else:
        print(
            f"[zoo] {a.model}: SI-SDRi {r.get('si_sdri', float('nan')):.2f} dB, SDRi "
            f"{r.get('sdri', float('nan')):.2f} dB over {r.get('n_items')} items -> {out}"
        )
    return 0


def _oracle_main(argv: list[str]) -> int:
    from .eval.evaluate import is_musdb_root
    from .eval.oracle import KINDS, run_music_oracles, run_oracles

    p = argparse.ArgumentParser(prog="zoo oracle", description=run_oracles.__doc__)
    p.add_argument(
        "--data",
        help="a Libri2Mix or MUSDB18(-HQ) folder (default: the built-in mini set of --dataset)",
    )
    p.add_argument("--dataset", choices=sorted(MINI_DATASETS), default="libri2mix-mini")
    p.add_argument("--task", default="sep_clean", help="Libri2Mix task")
    p.add_argument("--sample-rate", type=int, default=8000, help="Libri2Mix rate")
    p.add_argument("--results", default="results")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    a = p.parse_args(argv)
    data = a.data or str(prepare(a.dataset))
    try:
        if is_musdb_root(data):
            rows = run_music_oracles(data, a.results, kinds=a.kinds)
        else:
            rows = run_oracles(data, a.results, a.task, a.sample_rate, kinds=a.kinds)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"zoo oracle: error: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        score = (
            f"SDR {r['sdr']:.2f} dB"
            if "targets" in r
            else f"SI-SDRi {r['si_sdri']:.2f} dB, SDRi {r['sdri']:.2f} dB"
        )
        print(
            f"[zoo] {r['model']}: {score} over {r['n_items']} items"
            + (" (mini data)" if r["mini"] else "")
        )
    return 0


def _leaderboard_main(argv: list[str]) -> int:
    from .eval.leaderboard import write_leaderboard

    p = argparse.ArgumentParser(prog="zoo leaderboard")
    p.add_argument("--results", default="results")
    p.add_argument("-o", "--out", default="LEADERBOARD.md")
    a = p.parse_args(argv)
    print(f"[zoo] wrote {write_leaderboard(a.results, a.out)}")
    return 0


def _list_main(argv: list[str]) -> int:
    from .hub.registry import list_models

    for name, entry in sorted(list_models().items()):
        print(f"{name:36s} {entry['format']:22s} {entry.get('description', '')}")
    return 0


def _prepare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="zoo prepare", description=prepare.__doc__)
    p.add_argument("dataset", choices=sorted(MINI_DATASETS))
    p.add_argument("--root", help="where to write it (default: $ZOO_DATA_DIR/mini/...)")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    a = p.parse_args(argv)
    prepare(a.dataset, a.root, a.force)
    return 0


USAGE = """usage: zoo <command> [...]

commands:
  recipe NAME [--data PATH] [--gpus N] [--nodes N] [overrides]   run a recipe end to end
  recipes                                                        list the recipes
  prepare libri2mix-mini [--root PATH]                           write the mini dataset
  export CHECKPOINT -o DIR [--config config.yaml]                export in the zoo format
  list                                                           registered models
  separate MODEL FILE... -o DIR [--chunk S] [--download]         separate audio files
  evaluate MODEL --data PATH [--task T] [-o DIR]                 score a model like a recipe
  leaderboard [--results DIR] [-o LEADERBOARD.md]                tables + plot from results
  oracle [--data PATH | --dataset musdb18-mini] [--task T]       oracle-mask reference rows
  fit | validate | test | predict [--config ...]                 LightningCLI (see --help)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "recipe":
        return _recipe_main(rest)
    if cmd == "recipes":
        print("\n".join(available_recipes()))
        return 0
    if cmd == "prepare":
        return _prepare_main(rest)
    if cmd == "export":
        return _export_main(rest)
    if cmd == "separate":
        return _separate_main(rest)
    if cmd == "list":
        return _list_main(rest)
    if cmd == "evaluate":
        return _evaluate_main(rest)
    if cmd == "leaderboard":
        return _leaderboard_main(rest)
    if cmd == "oracle":
        return _oracle_main(rest)
    if cmd in ("fit", "validate", "test", "predict"):
        _cli_class()(args=argv)
        return 0
    print(f"zoo: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
