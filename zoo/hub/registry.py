"""Named models (``registry.json``, data shipped in the package) and verified downloads.

An entry names the files of a model, where they come from (``url`` per file: ``https://``,
``hf://owner/repo/file``, ``file://`` or ``package:`` for files shipped inside this package) and
the sha256 of each file (or ``sha256_prefix`` for files published under torch.hub's
``<name>-<first 8 hex digits of the sha256>`` names). A download goes to
``<cache>/<name>/<file>.part``, is checked, and only then renamed into place; a mismatch is an
error and the bad file is deleted. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from importlib import resources
from pathlib import Path

from .format import ModelFormatError, load_backbone, sha256_file

__all__ = ["REGISTRY", "list_models", "resolve", "fetch", "DownloadError", "cache_root"]


class DownloadError(RuntimeError):
    """A model file that could not be fetched or failed its sha256 check."""


def _registry() -> dict:
    return json.loads(resources.files("zoo.hub").joinpath("registry.json").read_text())


REGISTRY = _registry()


def list_models() -> dict[str, dict]:
    """The registry: name -> entry."""
    return {k: v for k, v in REGISTRY.items() if not k.startswith("_")}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("ZOO_CACHE", Path.home() / ".cache/separation-zoo"))


def _source_url(url: str) -> str:
    if url.startswith("hf://"):
        repo, _, file = url[5:].rpartition("/")
        return f"https://huggingface.co/{repo}/resolve/main/{file}"
    if url.startswith("package:"):
        return (resources.files("zoo.hub") / url[len("package:") :]).as_uri()
    return url


def fetch(
    name: str,
    entry: dict,
    cache_dir: str | Path | None = None,
    download: bool = False,
    verify: bool = True,
) -> Path:
    """Make sure every file of ``entry`` is in ``<cache>/<name>/``, verified; return that folder."""
    folder = cache_root(cache_dir) / name
    for file, spec in entry["files"].items():
        dest = folder / file
        want = spec.get("sha256") or spec.get("sha256_prefix")  # prefix: torch.hub file names
        if want is None and verify:
            raise DownloadError(
                f"{name}: no sha256 is recorded for {file} in the registry, so a download could "
                "not be verified; fetch it yourself and load the local path, or pass verify=False"
            )
        if dest.is_file():
            if not verify or sha256_file(dest).startswith(want):
                continue
            dest.unlink()  # a cached file that no longer matches is dropped
        if not download:
            raise DownloadError(
                f"{name} is not in the cache ({folder}); call zoo.load({name!r}, download=True) "
                f"or `zoo download {name}` to fetch it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        url = _source_url(spec["url"])
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f)
        except (OSError, ValueError) as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{name}: cannot fetch {url}: {exc}") from exc
        got = sha256_file(part)
        if verify and not got.startswith(want):
            part.unlink()
            raise DownloadError(
                f"{name}: {file} from {url} has sha256 {got}, the registry says {want}; "
                "the file was not kept"
            )
        os.replace(part, dest)
    return folder


def resolve(
    name_or_url: str,
    download: bool = False,
    cache_dir: str | Path | None = None,
    verify: bool = True,
):
    """A :class:`~zoo.hub.api.Separator` for a registry name (or a URL registered as a source)."""
    from .api import Separator

    models = list_models()
    name = name_or_url
    if name not in models:
        by_url = [
            k
            for k, v in models.items()
            if any(f["url"] == name_or_url for f in v["files"].values())
        ]
        if not by_url:
            raise KeyError(
                f"{name_or_url!r} is neither a model folder nor a registered model; "
                f"registered: {', '.join(sorted(models))}"
            )
        name = by_url[0]
    entry = models[name]
    folder = fetch(name, entry, cache_dir, download, verify)
    fmt = entry["format"]
    if fmt == "zoo":
        backbone, config = load_backbone(folder)
    elif fmt == "asteroid":
        from .convert import from_asteroid

        backbone, bb = from_asteroid(folder / entry["weights"])
        config = {"backbone": bb, "source": entry}
    elif fmt == "torchaudio-convtasnet":
        from .convert import from_torchaudio_convtasnet

        backbone, bb = from_torchaudio_convtasnet(
            folder / entry["weights"], **entry.get("args", {})
        )
        config = {"backbone": bb, "source": entry}
    elif fmt == "openunmix":
        from .convert import from_openunmix

        backbone, bb = from_openunmix(folder, **entry.get("args", {}))
        config = {"backbone": bb, "source": entry}
    else:
        raise ModelFormatError(f"{name}: unknown format {fmt!r} in the registry")
    return Separator(backbone, config)
