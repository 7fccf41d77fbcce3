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
from collections.abc import Iterator
from contextlib import contextmanager
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


MAX_CONFIG_BYTES = 1 << 20  # a zoo config.json is a few KB; a larger one is refused unread


def _weights_shapes(w_path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(w_path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors' own error types
        raise ModelFormatError(f"{w_path}: not a readable safetensors file ({exc})") from exc


@contextmanager
def _no_larger_than(shapes: dict, cfg_path: Path) -> Iterator[None]:
    """Stop building a network as soon as it registers more parameters (tensors or elements)
    than the weights file holds: a config asking for a huge network (``n_repeats: 200000``)
    is refused in a moment instead of being built for minutes."""
    import math

    from torch.nn.modules.module import register_module_parameter_registration_hook

    limit_n, limit_numel = len(shapes), sum(math.prod(s) for s in shapes.values())
    seen = [0, 0]

    def count(module, name, param):
        if param is None:
            return
        seen[0] += 1
        seen[1] += param.numel()
        if seen[0] > limit_n or seen[1] > limit_numel:
            raise ModelFormatError(
                f"{cfg_path}: the network it describes is larger than its weights file "
                f"({limit_n} tensors, {limit_numel} values): refused before building it"
            )

    handle = register_module_parameter_registration_hook(count)
    try:
        yield
    finally:
        handle.remove()


def _check_against_weights(bb: dict, cfg_path: Path, shapes: dict) -> None:
    """Build the backbone on the meta device (nothing allocated) and compare its tensors with
    the weights file's, so a config that asks for a huge or different network fails first."""
    import torch

    with torch.device("meta"), _no_larger_than(shapes, cfg_path):
        meta = build_backbone(bb["class_path"], bb["init_args"])
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    if want != shapes:
        diff = sorted(set(want) ^ set(shapes)) or [k for k in want if want[k] != shapes[k]]
        k = diff[0]
        raise ModelFormatError(
            f"{cfg_path}: the network it describes does not match the weights: {k} is "
            f"{want.get(k, 'absent')} in the config's network and {shapes.get(k, 'absent')} in "
            f"the weights ({len(diff)} tensor(s) differ)"
        )


def load_backbone(path: str | Path) -> tuple[Backbone, dict]:
    """Rebuild the backbone stored in a zoo model folder; returns ``(backbone, config)``.

    Checked before anything large is allocated: the config's size, its JSON and fields, the
    weights' sha256, the classes allowed, and the network's tensor shapes against the weights
    file's header; then the weights load with ``strict=True``.
    """
    path = Path(path)
    cfg_path, w_path = path / CONFIG, path / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            what = (
                "is not a regular file (a FIFO, a device or a folder)"
                if p.exists()
                else ("is missing")
            )
            raise ModelFormatError(f"not a zoo model folder: {p} {what}")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFormatError(
            f"{cfg_path}: {cfg_path.stat().st_size} bytes, more than a zoo config holds "
            f"({MAX_CONFIG_BYTES}); refused unread"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{cfg_path}: invalid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ModelFormatError(f"{cfg_path}: format {found!r}, expected {FORMAT!r}")
    bb = config.get("backbone")
    if not (isinstance(bb, dict) and isinstance(bb.get("init_args", {}), dict)):
        raise ModelFormatError(
            f'{cfg_path}: \'backbone\' must be {{"class_path": ..., "init_args": {{...}}}}'
        )
    bb = {"class_path": bb.get("class_path"), "init_args": bb.get("init_args") or {}}
    expected = config.get("weights_sha256")
    if expected and sha256_file(w_path) != expected:
        raise ModelFormatError(f"{w_path}: sha256 does not match the one in {cfg_path}")
    try:
        _check_against_weights(bb, cfg_path, _weights_shapes(w_path))
        model = build_backbone(bb["class_path"], bb["init_args"])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        why = f"backbone.init_args do not build a model ({exc})"
        raise ModelFormatError(f"{cfg_path}: {why}") from exc
    model.load_state_dict(load_file(str(w_path)), strict=True)
    return model.eval(), config
