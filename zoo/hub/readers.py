"""The one table of model formats the zoo reads: the registry's ``format`` field and
``zoo.load(path)``'s recognition of files on disk both go through it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..backbones.base import Backbone
from . import convert
from .convert_demucs import from_demucs
from .folder import CONFIG, load_backbone

__all__ = ["FORMATS", "detect", "load_format", "load_path"]


def _zoo(path: Path, **_) -> tuple[Backbone, dict]:
    return load_backbone(path)


def _peer(fn: Callable) -> Callable:
    def load(path: Path, **args) -> tuple[Backbone, dict]:
        backbone, config = fn(path, **args)
        return backbone, {"backbone": config, "source": str(path)}

    return load


# format -> loader(path, **registry args) -> (backbone in eval mode, config with "backbone")
FORMATS: dict[str, Callable[..., tuple[Backbone, dict]]] = {
    "zoo": _zoo,  # a folder: model.safetensors + config.json
    "asteroid": _peer(convert.from_asteroid),  # a file: BaseModel.serialize() dict
    "torchaudio-convtasnet": _peer(convert.from_torchaudio_convtasnet),  # a state-dict file
    "openunmix": _peer(convert.from_openunmix),  # a folder of <target>.pth (+ .json)
    "roformer": _peer(convert.from_roformer),  # a state dict file + its YAML config
    "demucs": _peer(from_demucs),  # a .th / .safetensors model, or a bag YAML beside its models
}


def _is_demucs(path: Path) -> bool:
    if path.suffix == ".th":
        return True
    if path.suffix in (".yaml", ".yml"):
        return True  # a bag; from_demucs says so if it is not one
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return "klass" in (f.metadata() or {})
    return False


def detect(path: str | Path) -> str:
    """The format of a model on disk."""
    path = Path(path)
    if path.is_dir():
        config = path / CONFIG
        if config.exists() and not config.is_file():  # never opened: a FIFO would block
            raise convert.ConversionError(
                f"{config} is not a regular file (a FIFO, a device or a folder): not a zoo model"
            )
        if config.is_file():
            return "zoo"
        return "demucs" if any(path.glob("*.yaml")) else "openunmix"
    if not path.is_file():
        raise convert.ConversionError(f"{path} does not exist")
    if _is_demucs(path):
        return "demucs"
    ckpt = convert.load_checkpoint(path)
    if "model_name" in ckpt:
        return "asteroid"
    keys = ckpt.get("state_dict", ckpt) if isinstance(ckpt.get("state_dict"), dict) else ckpt
    if any(k.startswith("mask_generator.") for k in keys):
        return "torchaudio-convtasnet"
    if any(k.removeprefix("model.").startswith("band_split.to_features.") for k in keys):
        return "roformer"
    raise convert.ConversionError(
        f"{path}: not a checkpoint format the zoo knows ({', '.join(FORMATS)})"
    )


def load_format(fmt: str, path: str | Path, **args) -> tuple[Backbone, dict]:
    """Load ``path`` in format ``fmt`` (a key of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise convert.ConversionError(f"unknown model format {fmt!r}: known {', '.join(FORMATS)}")
    return FORMATS[fmt](Path(path), **args)


def load_path(path: str | Path) -> tuple[Backbone, dict]:
    """Load whatever model is at ``path`` (its format recognised)."""
    return load_format(detect(path), path)
