"""Where the run layer finds and writes things.

* Recipes and conf fragments live at the top of the checkout (``recipes/``, ``conf/``), where a
  reader looks first; the wheel ships them inside the package (``zoo/recipes``, ``zoo/conf``:
  a package-dir mapping in ``pyproject.toml``), so a regular ``pip install`` has them too.
  ``--recipes DIR`` (or ``$ZOO_RECIPES``) adds a folder of one's own recipes, whose
  ``compose:`` fragments are looked up next to it first.
* The built-in mini datasets are written under :func:`data_dir`: ``$ZOO_DATA_DIR``, else
  ``data/`` of the source checkout the package runs from, else ``./data``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ASSETS", "CHECKOUT", "data_dir", "recipe_dirs"]

_package = Path(__file__).resolve().parents[1]
_root = _package.parent
CHECKOUT = _root if (_root / "pyproject.toml").is_file() and (_root / ".git").exists() else None
# where conf/ and recipes/ are: inside an installed wheel's package, else the checkout's top level
ASSETS = _package if (_package / "recipes").is_dir() else _root


def data_dir() -> Path:
    """Folder of the built-in mini datasets (``<data_dir>/mini/<name>``)."""
    if os.environ.get("ZOO_DATA_DIR"):
        return Path(os.environ["ZOO_DATA_DIR"]).expanduser()
    return (CHECKOUT or Path.cwd()) / "data"


def recipe_dirs(extra: str | Path | None = None) -> list[Path]:
    """Folders searched for ``<name>.yaml`` recipes, first match wins."""
    dirs = [Path(d).expanduser() for d in (extra, os.environ.get("ZOO_RECIPES")) if d]
    return [*dirs, ASSETS / "recipes"]
