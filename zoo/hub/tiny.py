"""Tiny random-weights models shipped in the package, one per backbone, for offline tests.

``python -m zoo.hub.tiny`` rewrites ``zoo/hub/tiny/<name>/`` and prints the registry entries;
the weights are seeded, so the files come out the same each time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .folder import export_model, sha256_file

CONVTASNET_TINY = {
    "n_src": 2,
    "sample_rate": 8000,
    "n_filters": 16,
    "kernel_size": 16,
    "bn_chan": 8,
    "hid_chan": 16,
    "skip_chan": 8,
    "n_blocks": 2,
    "n_repeats": 1,
}

TINY = {
    "convtasnet-tiny-random": {
        "class_path": "zoo.backbones.ConvTasNet",
        "init_args": CONVTASNET_TINY,
    },
    "convtasnet-causal-tiny-random": {
        "class_path": "zoo.backbones.ConvTasNet",
        # the same tiny network with causal convs and cLN (one more block)
        "init_args": {**CONVTASNET_TINY, "n_blocks": 3, "norm": "cLN", "causal": True},
    },
    "tdcnpp-tiny-random": {
        "class_path": "zoo.backbones.ConvTasNet",
        "init_args": {
            "n_src": 4,
            "sample_rate": 8000,
            "n_filters": 16,
            "kernel_size": 20,
            "bn_chan": 8,
            "hid_chan": 16,
            "skip_chan": 8,
            "n_blocks": 2,
            "n_repeats": 2,
            "norm": "fLN",
            "mask_act": "sigmoid",
            "repeat_skips": True,
            "block_scales": True,
            "mixture_consistency": True,
        },
    },
}
ROOT = Path(__file__).with_name("tiny")


def build(name: str):
    from .folder import build_backbone

    torch.manual_seed(0)
    spec = TINY[name]
    return build_backbone(spec["class_path"], spec["init_args"])


def write_all(root: Path = ROOT) -> dict:
    entries = {}
    for name, spec in TINY.items():
        out = export_model(
            build(name),
            spec,
            root / name,
            provenance={
                "note": "random weights for offline tests",
                "made_by": "python -m zoo.hub.tiny",
            },
        )
        entries[name] = {
            "format": "zoo",
            "description": "random weights (tests only): " + spec["class_path"],
            "files": {
                f: {"url": f"package:tiny/{name}/{f}", "sha256": sha256_file(out / f)}
                for f in ("model.safetensors", "config.json")
            },
        }
    return entries


if __name__ == "__main__":
    print(json.dumps(write_all(), indent=2))
