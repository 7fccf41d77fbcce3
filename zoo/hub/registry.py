"""Named models (``registry.json``, shipped in the package) and verified downloads.

An entry names the model's ``format`` (a key of :data:`zoo.hub.formats.FORMATS`), its files,
where each comes from (``url``: ``https://``, ``file://``, ``package:`` for files shipped inside
this package, or ``hf://owner/repo/file[@revision]`` on the Hugging Face hub) and its sha256 (or
``sha256_prefix`` for files published under torch.hub's ``<name>-<8 hex digits>`` names), and
optionally ``weights`` (the file the format loads; default: the folder) and ``args``.

Downloads go through kept libraries: ``torch.hub.download_url_to_file`` (temporary file, sha256
prefix check, then the final name) and ``huggingface_hub.hf_hub_download`` (pinned revision),
into ``<cache>/<name>/``; a mismatch is an error and the file is not kept. Nothing is
downloaded unless ``download=True``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from ..backbones.base import Backbone
from .format import sha256_file
from .formats import load_format

__all__ = [
    "REGISTRY",
    "DownloadError",
    "cache_root",
    "download",
    "fetch",
    "list_models",
    "resolve",
]


class DownloadError(RuntimeError):
    """A model file that could not be fetched or failed its sha256 check."""


def _registry() -> dict:
    return json.loads(resources.files("zoo.hub").joinpath("registry.json").read_text())


REGISTRY = _registry()


def list_models() -> dict[str, dict]:
    """Registered models (name, format, description): ready for ``zoo.load(name)``."""
    return {k: v for k, v in REGISTRY.items() if not k.startswith("_")}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("ZOO_CACHE", Path.home() / ".cache/separation-zoo"))


def _source_url(url: str) -> str:
    if url.startswith("package:"):
        return (resources.files("zoo.hub") / url[len("package:") :]).as_uri()
    return url


def _download(url: str, dest: Path, want: str | None) -> None:
    """Fetch ``url`` to ``dest`` (checked against the sha256 or its prefix ``want``)."""
    if url.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        spec, _, revision = url[5:].partition("@")
        repo, _, file = spec.rpartition("/")
        got = Path(hf_hub_download(repo, file, revision=revision or None, local_dir=dest.parent))
        if got.resolve() != dest.resolve():
            os.replace(got, dest)
        digest = sha256_file(dest)
        if want and not digest.startswith(want):
            dest.unlink()
            raise RuntimeError(f'invalid hash value (expected "{want}", got "{digest}")')
        return
    import torch.hub

    torch.hub.download_url_to_file(_source_url(url), str(dest), hash_prefix=want, progress=False)


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
                f"{name} is not in the cache ({folder}); run `zoo download {name}` or call "
                f"zoo.load({name!r}, download=True) to fetch it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _download(spec["url"], dest, want if verify else None)
        except RuntimeError as exc:  # torch.hub's hash check
            raise DownloadError(
                f"{name}: {file} from {spec['url']} failed its check ({exc}); the file was not kept"
            ) from exc
        except (OSError, ValueError) as exc:
            raise DownloadError(f"{name}: cannot fetch {spec['url']}: {exc}") from exc
    return folder


def download(name: str, cache_dir: str | None = None) -> Path:
    """Fetch a registered model into the cache (each file checked against its sha256).

    Args:
        name: registry name (``zoo list``).
        cache_dir: cache folder (default ``$ZOO_CACHE`` or ``~/.cache/separation-zoo``).
    """
    models = list_models()
    if name not in models:
        raise KeyError(
            f"{name!r} is not a registered model; registered: {', '.join(sorted(models))}"
        )
    return fetch(name, models[name], cache_dir, download=True)


def resolve(
    name_or_url: str,
    download: bool = False,
    cache_dir: str | Path | None = None,
    verify: bool = True,
) -> tuple[Backbone, dict]:
    """``(backbone, config)`` of a registry name (or of a URL registered as one of its files)."""
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
    target = folder / entry["weights"] if "weights" in entry else folder
    backbone, config = load_format(entry["format"], target, **entry.get("args", {}))
    return backbone, {**config, "registry": name}
