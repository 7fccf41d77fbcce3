"""``zoo export``: a trained run's checkpoint in the zoo format."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

__all__ = ["export_checkpoint"]


def export_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    config: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the backbone of a Lightning checkpoint in the zoo format.

    The backbone's class and arguments come from the LightningCLI ``config.yaml`` saved next to
    the run (``<version>/config.yaml`` for ``<version>/checkpoints/x.ckpt``) unless ``config`` names
    one. The checkpoint is read with ``torch.load(weights_only=True)``: no code is unpickled.

    Args:
        ckpt: a Lightning checkpoint of a run (``.../checkpoints/best-*.ckpt``).
        out_dir: the zoo model folder to write.
        config: the run's LightningCLI ``config.yaml`` (default: found next to the checkpoint).
        overwrite: replace the model files (``config.json``, ``model.safetensors``) of an
            existing model folder (never done otherwise; other files there are left alone).
    """

    from ..hub.folder import build_backbone, export_model
    from .results import git_sha

    ckpt, out_dir = Path(ckpt), Path(out_dir)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists: pass --overwrite to replace the model in it, or choose another -o"
        )
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
    from ..hub.convert import load_checkpoint

    saved = load_checkpoint(ckpt)  # weights_only: no code is unpickled
    if "state_dict" not in saved:
        raise ValueError(f"{ckpt}: not a Lightning checkpoint (no state_dict)")
    state = saved["state_dict"]
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
