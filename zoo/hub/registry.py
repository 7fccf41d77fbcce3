"""Named models (``registry.json``, shipped in the package) and verified downloads.

An entry names the model's ``format`` (a key of :data:`zoo.hub.readers.FORMATS`), its files,
where each comes from (``url``: ``https://``, ``file://``, ``package:`` for files shipped inside
this package, or ``hf://owner/repo/file[@revision]`` on the Hugging Face hub) and its sha256 (or
``sha256_prefix`` for files published under torch.hub's ``<name>-<8 hex digits>`` names), and
optionally ``weights`` (the file the format loads; default: the folder) and ``args``.

Downloads go through kept libraries: ``torch.hub.download_url_to_file`` (temporary file, sha256
prefix check, then the final name) and ``huggingface_hub.hf_hub_download`` (pinned revision),
into ``<cache>/<name>/``; a mismatch is an error and the file is not kept. Nothing is
downloaded unless ``download=True``. A file whose sha256 is not in the registry (published
weights that could not be fetched where the registry was written) is held back on its first
download, its hash shown, until the user accepts it with ``trust=True`` (``--trust``), which
records it in the user's pin file; later loads are checked against that pin.

An ``hf://owner/repo[@revision]`` that is not a registered file is a zoo model repo on the hub:
:func:`zoo.hub.api.load` hands it to :mod:`zoo.hub.hf`.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from ..backbones.base import Backbone
from ..errors import UserError
from .folder import sha256_file
from .readers import load_format

__all__ = [
    "REGISTRY",
    "DownloadError",
    "cache_root",
    "download",
    "fetch",
    "list_models",
    "pins_path",
    "registered",
    "resolve",
]


class DownloadError(UserError, RuntimeError):
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


def _not_cached(name: str, folder: Path) -> DownloadError:
    return DownloadError(
        f"{name} is not in the cache ({folder}); run `zoo download {name}` or call "
        f"zoo.load({name!r}, download=True) to fetch it"
    )


def pins_path() -> Path:
    """The user's pin file: sha256 values accepted with ``--trust`` for registry files that
    have none recorded (``$ZOO_PINS`` or ``~/.config/separation-zoo/pins.json``)."""
    return Path(os.environ.get("ZOO_PINS", Path.home() / ".config/separation-zoo/pins.json"))


def _pins() -> dict:
    path = pins_path()
    if not path.is_file():
        return {}
    try:
        pins = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DownloadError(f"{path}: not a valid pin file ({exc}); fix or remove it") from exc
    return pins if isinstance(pins, dict) else {}


def _record_pin(name: str, file: str, digest: str) -> Path:
    path = pins_path()
    pins = _pins()
    pins.setdefault(name, {})[file] = digest
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _first_use(name: str, file: str, spec: dict, folder: Path, download: bool, trust: bool):
    """A file with no sha256 in the registry nor in the user's pins: downloaded once into
    ``<cache>/<name>/.untrusted/``, its hash shown, and used only once the user trusts it
    (``--trust``), which records the hash in the pin file; never trusted silently."""
    untrusted = folder / ".untrusted" / file
    if not untrusted.is_file():
        if not download:
            raise _not_cached(name, folder)
        untrusted.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download(spec["url"], untrusted, None)
        except (OSError, ValueError, RuntimeError) as exc:
            raise DownloadError(f"{name}: cannot fetch {spec['url']}: {exc}") from exc
    digest = sha256_file(untrusted)
    if not trust:
        raise DownloadError(
            f"{name}: {file} has no sha256 in the registry; the download from {spec['url']} has "
            f"sha256 {digest}. Check it against the publisher's, then run `zoo download {name} "
            f"--trust` (or zoo.load(..., trust=True)) to record it in {pins_path()}"
        )
    pins = _record_pin(name, file, digest)
    print(f"[zoo] trusting {name}/{file} sha256 {digest} (recorded in {pins})")
    os.replace(untrusted, folder / file)


def fetch(
    name: str,
    entry: dict,
    cache_dir: str | Path | None = None,
    download: bool = False,
    trust: bool = False,
) -> Path:
    """Make sure every file of ``entry`` is in ``<cache>/<name>/``, verified; return that folder.

    Each file is checked against the registry's sha256 (or prefix), else against the hash the
    user pinned; a file with neither is held back until it is trusted (:func:`_first_use`)."""
    folder = cache_root(cache_dir) / name
    pinned = _pins().get(name, {})
    for file, spec in entry["files"].items():
        dest = folder / file
        # prefix: torch.hub file names; pinned: accepted by the user with --trust
        want = spec.get("sha256") or spec.get("sha256_prefix") or pinned.get(file)
        if want is None:
            if dest.is_file():  # a file nobody vouched for: held back like a fresh download
                (folder / ".untrusted").mkdir(exist_ok=True)
                os.replace(dest, folder / ".untrusted" / file)
            _first_use(name, file, spec, folder, download, trust)
            continue
        if dest.is_file():
            if sha256_file(dest).startswith(want):
                continue
            dest.unlink()  # a cached file that no longer matches is dropped
        if not download:
            raise _not_cached(name, folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _download(spec["url"], dest, want)
        except RuntimeError as exc:  # torch.hub's hash check
            raise DownloadError(
                f"{name}: {file} from {spec['url']} failed its check ({exc}); the file was not kept"
            ) from exc
        except (OSError, ValueError) as exc:
            raise DownloadError(f"{name}: cannot fetch {spec['url']}: {exc}") from exc
    return folder


def download(name: str, cache_dir: str | None = None, trust: bool = False) -> Path:
    """Fetch a registered model into the cache (each file checked against its sha256).

    Args:
        name: registry name (``zoo list``).
        cache_dir: cache folder (default ``$ZOO_CACHE`` or ``~/.cache/separation-zoo``).
        trust: accept the hash a file without a recorded sha256 downloaded with (shown by the
            first try), and record it in the user's pin file (``$ZOO_PINS``).
    """
    models = list_models()
    if name not in models:
        raise KeyError(
            f"{name!r} is not a registered model; registered: {', '.join(sorted(models))}"
        )
    return fetch(name, models[name], cache_dir, download=True, trust=trust)


def registered(name_or_url: str) -> str | None:
    """The registry name of ``name_or_url`` (a name, or the URL of one of its files)."""
    models = list_models()
    if name_or_url in models:
        return name_or_url
    return next(
        (k for k, v in models.items() if any(f["url"] == name_or_url for f in v["files"].values())),
        None,
    )


def resolve(
    name_or_url: str,
    download: bool = False,
    cache_dir: str | Path | None = None,
    trust: bool = False,
) -> tuple[Backbone, dict]:
    """``(backbone, config)`` of a registry name (or of a URL registered as one of its files)."""
    name = registered(name_or_url)
    if name is None:
        raise KeyError(
            f"{name_or_url!r} is neither a model folder nor a registered model; "
            f"registered: {', '.join(sorted(list_models()))}"
        )
    entry = list_models()[name]
    folder = fetch(name, entry, cache_dir, download, trust)
    target = folder / entry["weights"] if "weights" in entry else folder
    backbone, config = load_format(entry["format"], target, **entry.get("args", {}))
    return backbone, {**config, "registry": name}
