"""The ``demucs`` package's published HTDemucs checkpoints → zoo :class:`~zoo.backbones.HTDemucs`.

Demucs 4.x publishes each model in two forms, both read here without running any of its code:

* ``<sig>-<hash>.th`` (``demucs.pretrained``'s legacy repository): ``torch.save`` of
  ``{"klass", "args", "kwargs", "state", "training_args"}`` where ``klass`` is the class itself
  (pickled by reference) and ``segment`` may be a ``fractions.Fraction``. It is read with
  ``torch.load(weights_only=True)``, which refuses every global not allowed by name: the known
  demucs class names are allowed as inert markers (nothing of theirs is imported or called) and
  ``Fraction`` as itself.
* ``<sig>.safetensors`` (the Hugging Face repositories, 4.1): the tensors, with the class name
  and the arguments as JSON in the metadata (fractions as ``{"_type": "fraction", ...}``).

A bag of models (``htdemucs_ft``: four networks, each fine-tuned for one stem) is a YAML file
(``models: [sig, ...]``, optional ``weights`` per network and stem, optional ``segment``) whose
members lie beside it as ``<sig>.safetensors`` or ``<sig>-<hash>.th``. It becomes one zoo
model holding every member under ``models.<i>.`` and the weight matrix (``bag_weights``).

Arguments the zoo's network does not build (Wiener filtering, magnitude masks instead of
complex-as-channels, multi-band frequency wrapping, sparse attention, other positional
embeddings) are refused in one line naming them; training-only arguments are ignored.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from ..backbones.htdemucs import HTDemucs
from .convert import ConversionError

__all__ = ["from_demucs", "read_demucs_model"]

# demucs argument -> zoo argument (same meaning)
RENAMED = {"samplerate": "sample_rate", "nfft": "n_fft"}
SAME = {"sources", "audio_channels", "segment", "use_train_segment", "channels", "channels_time",
        "growth", "depth", "rewrite", "freq_emb", "emb_scale", "emb_smooth", "kernel_size",
        "stride", "time_stride", "context", "context_enc", "norm_starts", "norm_groups",
        "dconv_mode", "dconv_depth", "dconv_comp", "dconv_init", "bottom_channels", "t_layers",
        "t_hidden_scale", "t_heads", "t_dropout", "t_norm_in", "t_norm_out", "t_gelu",
        "t_layer_scale", "t_max_period", "t_weight_pos_embed", "t_cross_first",
        "rescale"}  # fmt: skip
# options the zoo builds only at this value (None: empty / off)
ONLY = {"wiener_iters": 0, "end_iters": 0, "cac": True, "multi_freqs": None, "t_emb": "sin",
        "t_norm_first": True, "t_group_norm": False, "t_sparse_self_attn": False,
        "t_sparse_cross_attn": False}  # fmt: skip
# training-time options (or options of a path the refusals above exclude): no effect here
IGNORED = {"wiener_residual", "t_sin_random_shift", "t_weight_decay", "t_lr", "t_max_positions",
           "t_cape_mean_normalize", "t_cape_augment", "t_cape_glob_loc_scale", "t_mask_type",
           "t_mask_random_seed", "t_sparse_attn_window", "t_global_window", "t_sparsity",
           "t_auto_sparsity", "multi_freqs_depth", "t_norm_in_group"}  # fmt: skip
CLASSES = ("demucs.htdemucs.HTDemucs", "demucs.hdemucs.HDemucs", "demucs.demucs.Demucs",
           "demucs.wdemucs.HDemucs", "demucs.tasnet.ConvTasNet")  # fmt: skip


_DEAD = re.compile(r"^models\.\d+\.(crosstransformer\.layers_t\.\d+|channel_downsampler_t)\.")


class _DemucsClass:
    """Stands for a demucs class named in a ``.th`` file: only its name is kept."""

    def __init__(self, name: str):
        self.name = name


_MARKERS = {name: _DemucsClass(name) for name in CLASSES}


def _read_th(path: Path) -> tuple[str, list, dict, dict]:
    import pickle

    allowed = [(marker, name) for name, marker in _MARKERS.items()] + [Fraction]
    try:
        with torch.serialization.safe_globals(allowed):
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = (str(exc).strip().splitlines() or [""])[-1][:200]
        raise ConversionError(
            f"{path}: refused: it holds Python objects other than a demucs model package "
            f"({why}); the zoo reads demucs .th files without running their code"
        ) from None
    if not isinstance(pkg, dict) or not {"klass", "kwargs", "state"} <= set(pkg):
        raise ConversionError(f"{path}: not a demucs model package (klass, kwargs, state)")
    klass = pkg["klass"]
    name = klass.name if isinstance(klass, _DemucsClass) else repr(klass)
    return name, list(pkg.get("args") or []), dict(pkg["kwargs"]), pkg["state"]


def _decode(value):
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _read_safetensors(path: Path) -> tuple[str, list, dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    if "klass" not in meta or "kwargs" not in meta:
        raise ConversionError(f"{path}: no demucs metadata (klass, kwargs): not a demucs model")
    if "structure" in meta:
        raise ConversionError(f"{path}: a quantized (DiffQ) demucs model: not supported")
    args, kwargs = _decode(json.loads(meta.get("args", "[]"))), _decode(json.loads(meta["kwargs"]))
    return meta["klass"], args, kwargs, state


def read_demucs_model(path: str | Path) -> tuple[dict, dict]:
    """One demucs model file → (zoo :class:`HTDemucs` arguments, its state dict in float32)."""
    path = Path(path)
    reader = _read_safetensors if path.suffix == ".safetensors" else _read_th
    klass, args, kwargs, state = reader(path)
    if klass != "demucs.htdemucs.HTDemucs":
        raise ConversionError(
            f"{path}: a {klass.rsplit('.', 1)[-1]} model: the zoo builds only HTDemucs (demucs "
            "v4); earlier Demucs/HDemucs checkpoints are not converted"
        )
    if args:
        kwargs = {"sources": args[0], **kwargs}
    if state.get("__quantized"):
        raise ConversionError(f"{path}: a quantized (DiffQ) demucs model: not supported")
    for key, only in ONLY.items():
        value = kwargs.get(key, only)
        if value != only and not (only is None and not value):
            raise ConversionError(
                f"{path}: {key}={value!r} is an HTDemucs option the zoo does not build (only "
                f"{only!r}): this checkpoint cannot be converted"
            )
    if not kwargs.get("t_norm_in", True) and kwargs.get("t_norm_in_group"):
        raise ConversionError(f"{path}: t_norm_in_group is an option the zoo does not build")
    unknown = sorted(set(kwargs) - SAME - set(RENAMED) - set(ONLY) - IGNORED)
    if unknown:
        raise ConversionError(
            f"{path}: {unknown[0]} is an HTDemucs argument the zoo does not know: this "
            "checkpoint cannot be converted"
        )
    out = {RENAMED.get(k, k): v for k, v in kwargs.items() if k in SAME or k in RENAMED}
    out["sources"] = list(out["sources"])
    rate = int(out.get("sample_rate", 44100))
    if "segment" in out:  # demucs takes int(segment * rate) samples: the zoo rounds, so exact
        out["segment"] = int(Fraction(out["segment"]) * rate) / rate
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return out, state


def _member_file(folder: Path, sig: str) -> Path:
    found = [folder / f"{sig}.safetensors"] + sorted(folder.glob(f"{sig}-*.th"))
    found = [p for p in found if p.is_file()]
    if not found:
        raise ConversionError(
            f"{folder}: the bag names model {sig}, but neither {sig}.safetensors nor "
            f"{sig}-<hash>.th is in that folder: download it beside the YAML"
        )
    return found[0]


def from_demucs(path: str | Path) -> tuple[nn.Module, dict]:
    """Build a zoo :class:`HTDemucs` from a demucs checkpoint (``.th`` / ``.safetensors``), a
    bag YAML, or a folder holding one bag YAML and its members; returns ``(backbone,
    {"class_path", "init_args"})`` whose outputs equal ``demucs.apply.apply_model(model, mix,
    split=False, shifts=0)``."""
    path = Path(path)
    if path.is_dir():
        bags = sorted(path.glob("*.yaml"))
        if len(bags) != 1:
            raise ConversionError(
                f"{path}: a demucs folder needs exactly one bag YAML, found {len(bags)}: pass "
                "the YAML or a model file"
            )
        path = bags[0]
    if path.suffix in (".yaml", ".yml"):
        import yaml

        bag = yaml.safe_load(path.read_text()) or {}
        sigs = bag.get("models")
        if not isinstance(sigs, list) or not sigs:
            raise ConversionError(f"{path}: not a demucs bag (no 'models' list)")
        members = [read_demucs_model(_member_file(path.parent, str(s))) for s in sigs]
        weights, segment = bag.get("weights"), bag.get("segment")
    else:
        members, weights, segment = [read_demucs_model(path)], None, None
    args = dict(members[0][0])
    for other, _ in members[1:]:
        if {k: v for k, v in other.items() if k != "segment"} != {
            k: v for k, v in args.items() if k != "segment"
        }:
            raise ConversionError(
                f"{path}: the bag's models have different architectures: the zoo builds bags "
                "of one HTDemucs configuration"
            )
    segments = [m[0].get("segment", 10.0) for m in members]
    if segment is not None:  # demucs' BagOfModels lowers each member's segment to the bag's
        segments = [min(float(segment), s) for s in segments]
    if len(set(segments)) > 1:
        raise ConversionError(f"{path}: the bag's models work on different segments {segments}")
    args["segment"] = segments[0]
    if weights is None and len(members) > 1:  # demucs' default: every model, every stem
        weights = [[1.0] * len(args["sources"]) for _ in members]
    if weights is not None:
        args["bag_weights"] = [[float(w) for w in row] for row in weights]
    state = {f"models.{i}.{k}": v for i, (_, s) in enumerate(members) for k, v in s.items()}
    try:
        backbone = HTDemucs(**args)
        built = backbone.state_dict()
        # weights of waveform layers whose outputs demucs never uses: the zoo does not build them
        for k in [k for k in state if k not in built and _DEAD.match(k)]:
            del state[k]
        backbone.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ConversionError(f"{path}: does not match its arguments ({first})") from None
    return backbone.eval(), {"class_path": "zoo.backbones.HTDemucs", "init_args": args}
