"""The zoo model format: ``model.safetensors`` + ``config.json``.

``config.json`` describes the model as data: the backbone's class path (only classes under
``zoo.backbones`` are ever instantiated) and init arguments, sample rate, source names, and
provenance (recipe, resolved training config, git sha, test metrics). Loading never unpickles
anything and always uses ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..backbones.base import Backbone

__all__ = [
    "FORMAT",
    "export_model",
    "load_backbone",
    "backbone_class",
    "build_backbone",
    "sha256_file",
    "ModelFormatError",
    "backbone_config_from_cli",
]

FORMAT = "separation-zoo/1"
ALLOWED_PREFIX = "zoo.backbones."
WEIGHTS, CONFIG = "model.safetensors", "config.json"


class ModelFormatError(ValueError):
    """A model folder that is not a valid zoo model."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def backbone_class(class_path: str) -> type[Backbone]:
    """The class named ``class_path``; only :class:`~zoo.backbones.Backbone` classes under
    ``zoo.backbones`` are allowed."""
    if not isinstance(class_path, str) or not class_path.startswith(ALLOWED_PREFIX):
        raise ModelFormatError(
            f"refusing to build {class_path!r}: a zoo model names a class under {ALLOWED_PREFIX}*"
        )
    module_name, _, cls_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ModelFormatError(f"unknown backbone class {class_path!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise ModelFormatError(f"{class_path!r} is not a zoo backbone (zoo.backbones.Backbone)")
    return cls


def build_backbone(class_path: str, init_args: dict) -> Backbone:
    """Instantiate ``class_path(**init_args)`` (see :func:`backbone_class`)."""
    return backbone_class(class_path)(**init_args)


def export_model(
    backbone: Backbone, backbone_config: dict, out_dir: str | Path, provenance: dict | None = None
) -> Path:
    """Write ``backbone`` in the zoo format to ``out_dir``.

    Args:
        backbone: the trained network.
        backbone_config: ``{"class_path": ..., "init_args": {...}}`` that rebuilds it.
        out_dir: folder to write (created; existing files of the same names are replaced
            atomically).
        provenance: free-form record (recipe, config, git sha, metrics...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    tmp = out / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, out / WEIGHTS)
    config = {
        "format": FORMAT,
        "backbone": {
            "class_path": backbone_config["class_path"],
            "init_args": dict(backbone_config.get("init_args") or {}),
        },
        "sample_rate": backbone.sample_rate,
        "n_src": backbone.n_src,
        "sources": list(backbone.sources or []),
        "audio_channels": backbone.audio_channels,
        "params": sum(p.numel() for p in backbone.parameters()),
        "weights_sha256": sha256_file(out / WEIGHTS),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provenance": provenance or {},
    }
    tmp = out / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2, default=str) + "\n")
    os.replace(tmp, out / CONFIG)
    return out


def load_backbone(path: str | Path) -> tuple[Backbone, dict]:
    """Rebuild the backbone stored in a zoo model folder; returns ``(backbone, config)``."""
    path = Path(path)
    cfg_path, w_path = path / CONFIG, path / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ModelFormatError(f"not a zoo model folder: {p} is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{cfg_path}: invalid JSON ({exc})") from exc
    if config.get("format") != FORMAT:
        raise ModelFormatError(f"{cfg_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    expected = config.get("weights_sha256")
    if expected and sha256_file(w_path) != expected:
        raise ModelFormatError(f"{w_path}: sha256 does not match the one in {cfg_path}")
    bb = config["backbone"]
    model = build_backbone(bb["class_path"], bb.get("init_args", {}))
    model.load_state_dict(load_file(str(w_path)), strict=True)
    return model.eval(), config


def backbone_config_from_cli(cfg) -> dict:
    """``{"class_path", "init_args"}`` of ``model.backbone`` in a LightningCLI config."""
    bb = cfg.model.backbone if hasattr(cfg, "model") else cfg["model"]["backbone"]
    d = bb.as_dict() if hasattr(bb, "as_dict") else dict(bb)
    return {"class_path": d["class_path"], "init_args": dict(d.get("init_args") or {})}
