"""``zoo recipe``: prepare the data -> fit -> test the best checkpoint -> results -> export,
one short script over the build path (:func:`zoo.run.build.build`) inside a run session
(:func:`zoo.run.session.run_session`: lock, ranks, resume, commit)."""

from __future__ import annotations

from pathlib import Path

from .build import resolve
from .session import run_session

__all__ = ["run_recipe"]


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
    from ..hub.folder import export_model
    from .build import build
    from .results import ResultsWriter, read_results
    from .resume import prepare_resume

    run = resolve(name, data, gpus, nodes, overrides, results, mini_root_dir, recipes)
    with run_session(run, resume=resume, fresh=fresh) as session:
        writer = ResultsWriter(str(run.dir), recipe=run.recipe.name)
        built = build(run, callbacks=[writer])
        model, dm, trainer = built.model, built.datamodule, built.trainer
        if session.checkpoint:  # the same run (only its budget may grow), logged where it was
            if budget := prepare_resume(run, session.checkpoint, built):
                writer.extra["resumed_with"] = budget
        trainer.fit(model, datamodule=dm, ckpt_path=session.checkpoint, weights_only=True)
        best = trainer.checkpoint_callback
        best = "best" if best is not None and best.best_model_path else None
        writer.extra["tested_checkpoint"] = tested_checkpoint(trainer)
        trainer.test(model, datamodule=dm, ckpt_path=best, weights_only=True)  # ours: no pickle
        if not trainer.is_global_zero:
            return {}
        result = read_results(run.dir)
        export_model(
            model.backbone,
            built.backbone_config(),
            run.dir / "model",
            provenance={
                "recipe": run.recipe.name,
                "mini": result["mini"],
                "git_sha": result.get("git_sha"),
                "metrics": result,
                "config": built.resolved_config(),
            },
        )
    _report(run, result, session.previous)
    return result


def tested_checkpoint(trainer) -> dict:
    """Which weights the test stage scores: the best checkpoint (its file, step and what chose
    it), or the weights at the end of training when no checkpoint was kept."""
    import re

    ckpt = trainer.checkpoint_callback
    if ckpt is None or not ckpt.best_model_path:
        return {"checkpoint": None, "step": trainer.global_step, "selected_by": "end of training"}
    name = Path(ckpt.best_model_path).name
    step = re.search(r"step=(\d+)", name)
    return {
        "checkpoint": name,
        "step": int(step.group(1)) if step else None,
        "selected_by": f"best {ckpt.monitor} ({ckpt.mode})" if ckpt.monitor else "last",
    }


def _report(run, result: dict, previous: Path | None) -> None:
    mini = " (built-in mini dataset: synthetic, not comparable to published numbers)"
    print(
        f"\n[zoo] {run.recipe.name}: test SI-SDR {result.get('si_sdr', float('nan')):.2f} dB, "
        f"SI-SDRi {result.get('si_sdri', float('nan')):.2f} dB over {result.get('n_items')} "
        f"items{mini if result['mini'] else ''}; wall time {result.get('wall_time_s')} s\n"
        f"[zoo] results in {run.out / 'metrics.json'}; model exported to {run.out / 'model'}"
        + (f"\n[zoo] the previous results moved to {previous}" if previous else ""),
        flush=True,
    )
