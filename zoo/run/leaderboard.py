"""The leaderboard: generated from ``results/**/metrics.json``, never typed by hand.

One table per dataset and task, sorted by its headline metric (the one its results record, as
their datamodule declares it: SI-SDRi for speech, SDR for music),
results on the built-in mini data in their own tables, oracle baselines as reference rows, and
published figures in a separate, cited column. Writes ``LEADERBOARD.md``, ``leaderboard.csv`` and
``leaderboard.png`` (quality against real-time factor, marker size by parameter count).
"""

from __future__ import annotations

import csv
import json
import sys
from importlib import resources
from pathlib import Path

from ..eval.metrics import DEFINITIONS

__all__ = ["collect", "headline", "render", "write_leaderboard"]


def headline(group: list[dict]) -> tuple[str, str]:
    """The key and label a table is ranked by: what its results record (``headline_metric``,
    from their datamodule), else what the datamodule claiming the dataset name declares."""
    from ..data import headline_metric

    recorded = next((m["headline_metric"] for m in group if m.get("headline_metric")), None)
    if isinstance(recorded, list) and len(recorded) == 2:
        return recorded[0], recorded[1]
    return headline_metric(group[0]["dataset"])


# what the tables read from a results file: (key, type); numbers may be null
NUMBERS = ("si_sdr", "si_sdri", "sdr", "sdri", "oracle_stitch_si_sdr", "oracle_stitch_si_sdri",
           "rtf", "params", "n_items")  # fmt: skip


def _problem(m) -> str | None:
    """Why a results file cannot be read as one (its first bad key), else ``None``."""
    if not isinstance(m, dict):
        return f"holds a {type(m).__name__}, not a results object"
    for key in ("dataset",):
        if not isinstance(m.get(key), str):
            return (
                f"'{key}' is {'missing' if key not in m else type(m[key]).__name__}, expected text"
            )
    for key in ("task", "recipe", "model", "architecture", "backbone", "loss", "protocol"):
        if m.get(key) is not None and not isinstance(m[key], str):
            return f"'{key}' is a {type(m[key]).__name__}, expected text"
    for key in NUMBERS:
        v = m.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            return f"'{key}' is a {type(v).__name__} ({v!r}), expected a number"
    targets = m.get("targets")
    if targets is not None:
        if not isinstance(targets, dict):
            return f"'targets' is a {type(targets).__name__}, expected an object"
        for name, t in targets.items():
            sdr = t.get("sdr") if isinstance(t, dict) else t
            if not isinstance(t, dict) or (sdr is not None and not isinstance(sdr, int | float)):
                return f"'targets.{name}.sdr' is not a number"
    for key in ("test_protocol", "headline_metric"):
        if m.get(key) is not None and not isinstance(m[key], dict | list):
            return f"'{key}' is a {type(m[key]).__name__}"
    return None


def collect(results: str | Path = "results", quiet: bool = False) -> list[dict]:
    """Every ``metrics.json`` under ``results`` (hidden folders such as ``.archive`` skipped).
    A file that is not a results file as this version writes them (invalid JSON, a missing or
    mistyped key: an old schema, a hand edit) is skipped with one line naming it and the key;
    the rest are read."""
    rows = []
    root = Path(results)
    for path in sorted(root.rglob("metrics.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            m = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            why = f"not valid JSON ({exc})"
        else:
            why = _problem(m)
        if why is not None:
            if not quiet:
                print(f"[zoo] skipped {path}: {why}", file=sys.stderr, flush=True)
            continue
        m["_path"] = str(path)
        rows.append(m)
    return rows


def _published() -> dict:
    data = json.loads(resources.files("zoo.run").joinpath("published.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _cite(pub: dict) -> str:
    """A published figure with the definition it was computed by (never put in a column of
    another definition: it stands in the cited column, labelled)."""
    figures = "; ".join(f"{pub[k]:.2f} {LABELS[k]}" for k in LABELS if k in pub)
    return f"{figures} ({pub['source']}; {pub['setup']})"


LABELS = {"si_sdri": "SI-SDRi", "sdr": "SDR (museval)", "usdr": "full-track SDR"}


def _name(m: dict) -> str:
    return m.get("model") or m.get("recipe") or Path(m["_path"]).parent.name


def _fmt(v, digits=2) -> str:
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _protocol(m: dict, name: str | None = None) -> str:
    """How a row's estimates were ordered and masked: ``blind`` (the model alone), ``oracle``
    (the true sources were read), ``oracle stitch`` (each clip's outputs matched to them)."""
    test = m.get("test_protocol") or {}
    parts = [name or m.get("protocol") or ("oracle" if m.get("oracle") else "blind")]
    if test.get("chunk_seconds"):
        parts.append(f"{test['chunk_seconds']:g} s clips")
    if test.get("mask"):
        parts.append(f"{test['mask']} masks")
    return ", ".join(parts)


def _is_reference(m: dict) -> bool:
    return bool(m.get("oracle")) or m.get("protocol") == "oracle"


def _target_order(name: str) -> tuple:
    order = ["vocals", "drums", "bass", "other", "accompaniment"]
    return (order.index(name) if name in order else len(order), name)


def _tables(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for m in rows:
        key = (m["dataset"], m.get("task", ""), bool(m.get("mini")))
        groups.setdefault(key, []).append(m)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])))


def render(rows: list[dict], plot_name: str | None = "leaderboard.png") -> str:
    published = _published()
    lines = [
        "# Leaderboard",
        "",
        "Generated by `make leaderboard` from `results/**/metrics.json`; do not edit by hand. "
        "Published figures are other people's numbers, cited in their own column, and are "
        "not comparable with rows trained on the mini data.",
        "",
    ]
    if plot_name:
        lines += [f"![quality against real-time factor]({plot_name})", ""]
    if not rows:
        lines.append("No results yet: run `make recipe NAME=...`.")
    for (dataset, task, mini), group in _tables(rows).items():
        key, label = headline(group)
        title = f"{dataset} {task}".strip()
        lines += [
            f"## {title}"
            + (
                " — built-in mini data (synthetic; not comparable to published results)"
                if mini
                else ""
            ),
            "",
        ]
        # music: museval's SDR per target next to the average, and the full-track SDR
        targets = sorted({t for m in group for t in (m.get("targets") or {})}, key=_target_order)
        usdr = any(m.get("usdr") is not None for m in group)
        extra_head = "".join(f" {t} SDR |" for t in targets)
        extra_head += " full-track SDR (dB) |" if usdr else ""
        n_extra = len(targets) + usdr
        lines += [
            f"| # | model | backbone | objective | protocol | {label} |{extra_head} SI-SDR (dB) | "
            "params | RTF | items | published (cited) |",
            "|---:|---|---|---|---|---:|" + "---:|" * n_extra + "---:|---:|---:|---:|---|",
        ]

        def per_target(m, targets=targets, usdr=usdr):
            cells = "".join(
                f" {_fmt((m.get('targets') or {}).get(t, {}).get('sdr'))} |" for t in targets
            )
            return cells + (f" {_fmt(m.get('usdr'))} |" if usdr else "")

        def best_first(m, key=key):
            return -(m.get(key) if m.get(key) is not None else float("-inf"))

        # a model also scored with its clips ordered by the references: a reference row of its own
        stitched = [
            {**m, key: m.get(f"oracle_stitch_{key}"), "si_sdr": m.get("oracle_stitch_si_sdr"),
             "_protocol": _protocol(m, "oracle stitch")}
            for m in group
            if m.get(f"oracle_stitch_{key}") is not None
        ]  # fmt: skip
        oracle = sorted([*(m for m in group if _is_reference(m)), *stitched], key=best_first)
        ranked = sorted((m for m in group if not _is_reference(m)), key=best_first)
        for i, m in enumerate(ranked, 1):
            backbone = (m.get("backbone") or "").rsplit(".", 1)[-1]
            pub = published.get(f"{dataset}/{task}/{m.get('architecture', backbone)}")
            cited = "" if mini or not pub else _cite(pub)
            lines.append(
                f"| {i} | {_name(m)} | {m.get('architecture', backbone)} | {m.get('loss', '')} | "
                f"{_protocol(m)} | {_fmt(m.get(key))} |{per_target(m)} {_fmt(m.get('si_sdr'))} | "
                f"{m.get('params', 0) / 1e6:.2f} M | {_fmt(m.get('rtf'), 3)} | "
                f"{m.get('n_items', '')} | {cited} |"
            )
        for m in oracle:
            lines.append(
                f"| ref | {_name(m)} | {m.get('architecture', '')} | "
                f"{'' if m.get('oracle') else m.get('loss', '')} | "  # oracle masks: not trained
                f"{m.get('_protocol') or _protocol(m)} | {_fmt(m.get(key))} |{per_target(m)} "
                f"{_fmt(m.get('si_sdr'))} | | | {m.get('n_items', '')} | |"
            )
        lines.append("")
    lines += [
        "How to read it: each table compares models on one dataset and task with the same "
        "evaluation code; higher is better; RTF is separation time over audio duration on "
        "the machine that ran the test (lower is faster); `ref` rows read the true "
        "sources (oracle masks, autoencoders of the sources, or a model's clips ordered by the "
        "references: `oracle stitch`, the AudioSlots paper's protocol) and are references, not "
        "separators; `blind` rows used the mixture alone. SDR definitions (a published number "
        "is labelled with its own and never sits in a column of another): "
        + "; ".join(f"**{k}**: {v}" for k, v in DEFINITIONS.items())
        + ". Music tables give the museval SDR per target and its mean, and the full-track SDR "
        "beside it.",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    """Quality against real-time factor, one panel per leaderboard table (speech SI-SDRi and
    music SDR never share an axis); marker area ~ parameter count."""
    panels = [
        (key, pts)
        for key, group in _tables(rows).items()
        if (pts := [m for m in group if m.get("rtf") and not _is_reference(m)])
    ]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7.5, 3.6 * len(panels)), squeeze=False, layout="constrained"
    )
    for ax, ((dataset, task, mini), pts) in zip(axes[:, 0], panels, strict=True):
        key, label = headline(pts)
        for m in pts:
            size = 30 + 300 * (m.get("params", 0) / 5e6) ** 0.5
            y = m.get(key) if m.get(key) is not None else 0.0
            ax.scatter(m["rtf"], y, s=size, alpha=0.6)
            ax.annotate(_name(m), (m["rtf"], y), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
        rtfs = [m["rtf"] for m in pts]
        if max(rtfs) / min(rtfs) > 20:  # log scale only when the speeds span decades
            ax.set_xscale("log")
        else:
            ax.ticklabel_format(axis="x", style="plain", useOffset=False)
            pad = 0.1 * (max(rtfs) - min(rtfs) or max(rtfs))
            ax.set_xlim(min(rtfs) - pad, max(rtfs) + 3 * pad)
        ax.set_xlabel("real-time factor (lower is faster)")
        ax.set_ylabel(label)
        ax.set_title(f"{dataset} {task}".strip() + (" (mini data)" if mini else ""), fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Quality against speed (marker area ~ parameter count)", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_leaderboard(results: str | Path = "results", out: str | Path = "LEADERBOARD.md") -> Path:
    """Tables and plot from every ``metrics.json``: ``LEADERBOARD.md``, ``leaderboard.csv``,
    ``leaderboard.png``.

    Args:
        results: folder searched for ``metrics.json`` files (hidden folders skipped).
        out: the Markdown file to write; the CSV and the plot go next to it.
    """
    rows = collect(results)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_name("leaderboard.png")
    has_plot = plot(rows, png)
    out.write_text(render(rows, png.name if has_plot else None))
    fields = [
        "dataset",
        "task",
        "mini",
        "recipe",
        "backbone",
        "loss",
        "protocol",
        "si_sdr",
        "si_sdri",
        "oracle_stitch_si_sdri",
        "sdr",
        "params",
        "rtf",
        "n_items",
        "git_sha",
        "_path",
    ]
    with open(out.with_name("leaderboard.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return out
