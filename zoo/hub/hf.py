"""Zoo models on the Hugging Face Hub: ``zoo.load("hf://owner/repo[@revision]")`` and
``zoo push``, through ``huggingface_hub`` (2.x, pinned in the constraints).

A hub repo of the zoo holds a zoo model folder (``config.json`` + ``model.safetensors``) and a
generated model card (``README.md``). Downloads go through ``snapshot_download`` into the
standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), pinned to the revision asked for
(a branch, a tag or a commit; the commit it resolved to is recorded in the loaded config), and
``HF_HUB_OFFLINE=1`` loads from that cache without any request. ``HF_ENDPOINT`` and ``HF_TOKEN``
are the library's own settings and are read at each call. The weights are checked against the
sha256 that ``config.json`` records, as for any zoo folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError
from .folder import CONFIG, WEIGHTS, load_backbone

__all__ = ["HubError", "load_repo", "model_card", "parse_url", "push"]

PATTERNS = [CONFIG, WEIGHTS, "README.md"]


class HubError(UserError, RuntimeError):
    """A hub repo that cannot be fetched, found or written."""


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's transport errors (huggingface_hub 2 talks through ``httpx2``; they are
    not OSErrors): an unreachable hub is a one-line error, not a traceback."""
    out = []
    for module in ("httpx2", "httpx"):
        try:
            out.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(out)


def parse_url(url: str) -> tuple[str, str | None]:
    """``hf://owner/repo[@revision]`` → ``(owner/repo, revision or None)``."""
    spec, _, revision = url[len("hf://") :].partition("@")
    parts = spec.strip("/").split("/")
    if not url.startswith("hf://") or len(parts) != 2 or not all(parts):
        raise HubError(f"{url!r}: a hub model is hf://owner/repo or hf://owner/repo@revision")
    return "/".join(parts), revision or None


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _offline() -> bool:
    """The library's offline flag, or ``HF_HUB_OFFLINE`` as set now: the library reads the
    variable once, at import, so a process that sets it later is honoured here too."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return flag or constants.HF_HUB_OFFLINE


def load_repo(url: str, cache_dir: str | Path | None = None):
    """``(backbone, config)`` of the zoo model in the hub repo ``url`` (``hf://owner/repo[@rev]``);
    ``config["hub"]`` records the repo and the commit it was loaded from."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = parse_url(url)
    try:
        folder = Path(
            snapshot_download(
                repo,
                revision=revision,
                allow_patterns=PATTERNS,
                cache_dir=cache_dir,
                endpoint=_endpoint(),
                local_files_only=_offline(),
            )
        )
    except RepositoryNotFoundError as exc:
        raise HubError(f"{url}: no such model repo on {_endpoint() or 'the hub'}") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{url}: the repo has no revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        # snapshot_download falls back to the cache on any hub error: name the hub's answer
        cause = exc.__cause__
        if isinstance(cause, RepositoryNotFoundError):
            raise HubError(f"{url}: no such model repo on {_endpoint() or 'the hub'}") from exc
        if isinstance(cause, RevisionNotFoundError):
            raise HubError(f"{url}: the repo has no revision {revision!r}") from exc
        why = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
        raise HubError(
            f"{url} is not in the Hugging Face cache and {why}: load it once online "
            "(or unset HF_HUB_OFFLINE)"
        ) from exc
    except (OSError, *_network_errors()) as exc:  # connection errors
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HubError(f"{url}: cannot fetch from {_endpoint() or 'the hub'} ({why})") from exc
    if not (folder / CONFIG).is_file():
        raise HubError(f"{url}: the repo holds no {CONFIG}: it is not a zoo model (zoo push)")
    backbone, config = load_backbone(folder)
    commit = folder.name  # snapshots/<commit>
    config["hub"] = {"repo": repo, "revision": revision or "main", "commit": commit,
                     "url": f"hf://{repo}@{commit}"}  # fmt: skip
    return backbone, config


def _metrics_lines(metrics: dict) -> list[str]:
    if not metrics:
        return ["No test metrics were recorded with this model."]
    label = (
        f"**mini dataset** ({metrics.get('data_source', 'built-in, synthetic')}): "
        "a smoke-scale run, not comparable with published numbers"
        if metrics.get("mini")
        else f"{metrics.get('dataset', '?')} {metrics.get('split', 'test')} set"
    )
    keys = [
        k for k in ("si_sdri", "si_sdr", "sdri", "sdr", "oracle_stitch_si_sdri") if k in metrics
    ]
    rows = [f"| {k} | {metrics[k]:.2f} dB |" for k in keys if isinstance(metrics[k], (int, float))]
    targets = metrics.get("targets") or {}
    rows += [f"| sdr ({t}) | {v['sdr']:.2f} dB |" for t, v in targets.items() if "sdr" in v]
    return [
        f"Measured on the {label}; {metrics.get('n_items', '?')} items, protocol "
        f"`{metrics.get('protocol', 'blind')}`.",
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
    ]


def model_card(config: dict, repo: str) -> str:
    """The ``README.md`` of a pushed model: what it is, how it was trained and scored, how to
    load it; generated from its ``config.json`` only."""
    bb = config.get("backbone", {})
    prov = config.get("provenance") or {}
    metrics = prov.get("metrics") or {}
    arch = metrics.get("architecture") or bb.get("class_path", "?").rsplit(".", 1)[-1]
    recipe = prov.get("recipe")
    sources = config.get("sources") or [f"s{j + 1}" for j in range(config.get("n_src", 0))]
    tags = ["separation-zoo", "audio-source-separation", arch.lower()]
    if prov.get("mini"):
        tags.append("mini-dataset")
    lines = [
        "---",
        "library_name: separation-zoo",
        "pipeline_tag: audio-to-audio",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# {arch}" + (f" ({recipe} recipe)" if recipe else ""),
        "",
        f"A {arch} source separator in the separation-zoo format ({config.get('format')}).",
        "",
        "## Model",
        "",
        f"- backbone: `{bb.get('class_path')}`, {config.get('params', '?'):,} parameters"
        if isinstance(config.get("params"), int)
        else f"- backbone: `{bb.get('class_path')}`",
        f"- sample rate: {config.get('sample_rate')} Hz; channels: "
        f"{config.get('audio_channels') or 'any (each separated on its own)'}",
        f"- outputs: {', '.join(sources)}"
        + (" (named, in this order)" if config.get("sources") else " (anonymous, PIT-matched)"),
        f"- weights sha256: `{config.get('weights_sha256')}`",
        "",
        "## Training",
        "",
        f"- recipe: `{recipe}`" if recipe else "- recipe: not recorded (converted or hand-made)",
        "- data: "
        + (
            "the built-in mini dataset (synthetic)"
            if prov.get("mini")
            else metrics.get("dataset", "not recorded")
        ),
        f"- code: separation-zoo at git `{prov.get('git_sha', 'unknown')}`",
        "",
        "## Metrics",
        "",
        *_metrics_lines(metrics),
        "",
        "## How to load",
        "",
        "```python",
        "import zoo",
        "",
        f'sep = zoo.load("hf://{repo}")  # pin a commit: hf://{repo}@<commit>',
        "sources = sep.separate(wav, sample_rate)  # (sources, channels, time)",
        "```",
        "",
        f"or `zoo separate hf://{repo} input.wav -o out/`.",
        "",
        "## Resolved configuration",
        "",
        "```json",
        json.dumps(
            {"backbone": bb, "training": prov.get("config")}
            if prov.get("config")
            else {"backbone": bb},
            indent=2,
            default=str,
        ),
        "```",
        "",
    ]
    return "\n".join(lines)


def push(
    model: str,
    repo: str,
    private: bool = False,
    message: str | None = None,
    download: bool = False,
) -> dict:
    """Upload a model to a Hugging Face Hub repo (created if missing) with a generated model
    card; returns the repo, the commit and the pinned ``hf://`` URL that loads it.

    Args:
        model: a zoo model folder (uploaded as it is), or anything ``zoo.load`` takes (a peer
            checkpoint or a registry name: converted to the zoo format first).
        repo: ``owner/name`` on the hub (``HF_ENDPOINT`` / ``HF_TOKEN`` as the library reads
            them).
        private: create the repo private.
        message: the commit message (default: names the model and its recipe).
        download: fetch a registered model that is not in the cache yet.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .folder import export_model
    from .readers import load_path
    from .registry import resolve

    if _offline():
        raise HubError("HF_HUB_OFFLINE is set: unset it to push to the hub")
    parse_url(f"hf://{repo}")  # owner/name
    src = Path(str(model)).expanduser()
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp)
        if (src / CONFIG).is_file():  # a zoo folder: its own files, checked by loading them
            load_backbone(src)
            for f in (CONFIG, WEIGHTS):
                shutil.copy2(src / f, folder / f)
        else:
            backbone, loaded = load_path(src) if src.exists() else resolve(model, download)
            export_model(backbone, loaded["backbone"], folder,
                         provenance={"converted_from": str(model)})  # fmt: skip
        config = json.loads((folder / CONFIG).read_text())
        (folder / "README.md").write_text(model_card(config, repo))
        recipe = (config.get("provenance") or {}).get("recipe")
        api = HfApi(endpoint=_endpoint())
        try:
            api.create_repo(repo, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=folder,
                repo_id=repo,
                commit_message=message
                or f"zoo push: {config['backbone']['class_path']}"
                + (f" ({recipe} recipe)" if recipe else ""),
            )
        except (HfHubHTTPError, OSError, *_network_errors()) as exc:
            why = (str(exc).splitlines() or [type(exc).__name__])[0]
            where = _endpoint() or "https://huggingface.co"
            raise HubError(f"cannot push to {repo} on {where}: {why}") from exc
    commit = info.oid
    return {"repo": repo, "commit": commit, "url": f"hf://{repo}@{commit}",
            "files": [CONFIG, WEIGHTS, "README.md"]}  # fmt: skip
