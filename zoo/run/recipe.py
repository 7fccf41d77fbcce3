"""Recipes: their schema, where they are found, and how they become LightningCLI arguments.

A recipe (``<dataset>_<method>.yaml``) is data::

    recipe:                 # metadata (optional)
      mini_dataset: libri2mix-mini     # default: the one its datamodule class declares
    compose:                # conf fragments, applied in order
      - conf/trainer/default.yaml
      - ...
    model: ...              # the recipe's own LightningCLI settings (trainer, model, data, ...)
    mini:                   # applied on top, only on the built-in mini data
      compose: [...]
      trainer: ...

Each value is stated once: the sample rate lives in the backbone, and the datamodule's rate is
linked to it (:class:`zoo.run.build.ZooCLI`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .paths import ASSETS, recipe_dirs

__all__ = ["Recipe", "RecipeError", "available_recipes", "load_recipe"]

SECTIONS = {"seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler"}
TOP_KEYS = {"recipe", "compose", "mini", *SECTIONS}
META_KEYS = {"mini_dataset"}
MINI_KEYS = {"compose", *SECTIONS}


class RecipeError(ValueError):
    """A recipe that does not exist or is malformed."""


def available_recipes(recipes: str | Path | None = None) -> list[str]:
    """The recipes: the built-in ones, plus those in ``recipes`` and ``$ZOO_RECIPES``.

    Args:
        recipes: an extra folder of recipes.
    """
    return sorted({p.stem for d in recipe_dirs(recipes) for p in d.glob("*.yaml")})


@dataclass(frozen=True)
class Recipe:
    """A parsed, checked recipe.

    Attributes:
        name: recipe name (file stem).
        path: the recipe file.
        mini_dataset: which built-in mini dataset it runs on without ``--data`` (the one its
            datamodule class declares, :attr:`zoo.data.base.SeparationData.mini`).
        compose, body: fragments (resolved paths) and own settings at paper scale.
        mini_compose, mini_body: what the ``mini:`` block adds on the built-in data.
    """

    name: str
    path: Path
    mini_dataset: str
    compose: list[Path] = field(default_factory=list)
    body: dict = field(default_factory=dict)
    mini_compose: list[Path] = field(default_factory=list)
    mini_body: dict = field(default_factory=dict)

    def layers(self, mini: bool) -> list[tuple[Path | None, dict | None]]:
        """The configuration layers in order: ``(fragment path, None)`` or ``(None, body)``."""
        out: list = [(p, None) for p in self.compose] + [(None, self.body)]
        if mini:
            out += [(p, None) for p in self.mini_compose]
            out += [(None, self.mini_body)] if self.mini_body else []
        return out

    def cli_args(self, mini: bool) -> list[str]:
        """LightningCLI ``--config`` arguments: fragment paths, and the recipe's own settings as
        YAML text (nothing is written; LightningCLI saves the resolved ``config.yaml`` of a
        run as its record)."""
        args = []
        for path, body in self.layers(mini):
            args += ["--config", str(path) if body is None else yaml.safe_dump(body)]
        return args

    def merged(self, mini: bool) -> dict:
        """The layers merged as plain dicts (for reading settings, e.g. the backbone's sources;
        LightningCLI does the real composition)."""
        out: dict = {}
        for path, body in self.layers(mini):
            _merge(out, body if body is not None else yaml.safe_load(path.read_text()) or {})
        return out


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            if "class_path" in v and v["class_path"] != into[k].get("class_path"):
                into[k] = dict(v)  # another class: its arguments start afresh
            else:
                _merge(into[k], v)
        else:
            into[k] = v


def _find(name: str, recipes: str | Path | None) -> Path:
    if name.endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if path.is_file():
            return path
        raise RecipeError(f"recipe file not found: {path}")
    for d in recipe_dirs(recipes):
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    raise RecipeError(
        f"no recipe named {name!r} (looked in {', '.join(str(d) for d in recipe_dirs(recipes))});"
        f" available recipes: {', '.join(available_recipes(recipes))}"
    )


def _fragment(frag: str, recipe_path: Path) -> Path:
    for base in (recipe_path.parent.parent, recipe_path.parent, ASSETS):
        if (base / frag).is_file():
            return (base / frag).resolve()
    raise RecipeError(
        f"{recipe_path}: composed fragment {frag} does not exist (looked next to the recipe and "
        f"in {ASSETS})"
    )


def load_recipe(name: str, recipes: str | Path | None = None) -> Recipe:
    """Find and check a recipe by name (or path); every error names the file and the key."""
    path = _find(name, recipes)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(spec, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping")
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise RecipeError(
            f"{path}: unknown keys {sorted(unknown)}; a recipe has {sorted(TOP_KEYS)}"
        )
    meta = spec.get("recipe") or {}
    if set(meta) - META_KEYS:
        raise RecipeError(f"{path}: unknown recipe: keys {sorted(set(meta) - META_KEYS)}")
    mini = dict(spec.get("mini") or {})
    if set(mini) - MINI_KEYS:
        raise RecipeError(f"{path}: unknown mini: keys {sorted(set(mini) - MINI_KEYS)}")
    body = {k: v for k, v in spec.items() if k in SECTIONS}
    recipe = Recipe(
        name=path.stem,
        path=path.resolve(),
        mini_dataset="",
        compose=[_fragment(f, path) for f in spec.get("compose") or []],
        body=body,
        mini_compose=[_fragment(f, path) for f in mini.pop("compose", None) or []],
        mini_body=mini,
    )
    return replace(recipe, mini_dataset=_mini_dataset(recipe, meta.get("mini_dataset")))


def _mini_dataset(recipe: Recipe, stated: str | None) -> str:
    """The recipe's mini dataset: ``stated``, else the one its datamodule class declares."""
    import importlib

    from ..data import mini_datasets

    known = mini_datasets()
    if stated is not None:
        if stated not in known:
            raise RecipeError(
                f"{recipe.path}: recipe.mini_dataset {stated!r} is not one of {sorted(known)}"
            )
        return stated
    class_path = (recipe.merged(False).get("data") or {}).get("class_path")
    if not class_path:
        raise RecipeError(f"{recipe.path}: no data.class_path (compose a conf/data fragment)")
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RecipeError(f"{recipe.path}: data.class_path {class_path}: {exc}") from None
    mini = getattr(cls, "mini", None)
    if mini is None:
        raise RecipeError(
            f"{recipe.path}: {class_path} declares no built-in mini dataset: state one in "
            f"recipe.mini_dataset ({', '.join(sorted(known))}) or run it with --data"
        )
    return mini.name
