"""Converters from the peers' published formats to zoo backbones (renaming only, strict loads).

* Asteroid: the dict written by ``BaseModel.serialize()`` (``model_name``, ``model_args``,
  ``state_dict``, ``infos``), as published on Zenodo and the Hugging Face hub. Its ``infos`` hold a
  ``torch.torch_version.TorchVersion``, which ``torch.load(weights_only=True)`` refuses unless
  allowed: we allow exactly that class, nothing else.
* torchaudio: the state dict of ``torchaudio.models.ConvTasNet`` (e.g. the
  ``CONVTASNET_BASE_LIBRI2MIX`` bundle); the architecture numbers are read from the tensor shapes,
  the block/repeat split (not in the weights) defaults to the bundle's 8 x 3.
* Open-Unmix: the folder written by its ``train.py`` (``<target>.pth`` state dict, or
  ``<target>-<hash>.pth`` as published, ``<target>.json``, ``separator.json``); the network sizes
  are read from the tensor shapes, the STFT settings from ``separator.json`` (or given).
* BS-RoFormer / Mel-RoFormer: a state dict in the ``bs-roformer`` package's layout (0.3.x, as
  the community checkpoints that UVR and ``audio-separator`` load are saved) with its YAML
  config (the ``model:`` / ``training:`` / ``audio:`` sections of Music-Source-Separation-
  Training); the fixed rotary frequencies are dropped after checking them, and any option the
  zoo's :class:`~zoo.backbones.RoFormer` does not build is refused by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..backbones import ConvTasNet, OpenUnmix
from ..backbones.roformer import RoFormer

__all__ = [
    "ConversionError",
    "from_asteroid",
    "from_openunmix",
    "from_roformer",
    "load_checkpoint",
    "from_torchaudio_convtasnet",
    "rename",
]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted (unknown model, unsupported option)."""


def rename(state: dict, rules: list[tuple[str, str]]) -> dict:
    """Apply the first matching ``(regex, replacement)`` to each key; unmatched keys are kept."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            if re.search(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        out[new] = value
    return out


_BLOCK = {"0": "in_conv", "1": "act1", "2": "norm1", "3": "dconv", "4": "act2", "5": "norm2"}

ASTEROID_CONVTASNET = [
    (r"^masker\.bottleneck\.0\.", "masker.in_norm."),
    (r"^masker\.bottleneck\.1\.", "masker.bottleneck."),
    *[
        (rf"^masker\.TCN\.(\d+)\.shared_block\.{i}\.", rf"masker.blocks.\1.{n}.")
        for i, n in _BLOCK.items()
    ],
    (r"^masker\.TCN\.(\d+)\.(res_conv|skip_conv)\.", r"masker.blocks.\1.\2."),
    (r"^masker\.mask_net\.0\.", "masker.mask_prelu."),
    (r"^masker\.mask_net\.1\.", "masker.mask_conv."),
]

TORCHAUDIO_CONVTASNET = [
    (r"^encoder\.weight$", "encoder.filterbank._filters"),
    (r"^decoder\.weight$", "decoder.filterbank._filters"),
    (r"^mask_generator\.input_norm\.weight$", "masker.in_norm.gamma"),
    (r"^mask_generator\.input_norm\.bias$", "masker.in_norm.beta"),
    (r"^mask_generator\.input_conv\.", "masker.bottleneck."),
    (r"^mask_generator\.conv_layers\.(\d+)\.conv_layers\.([25])\.weight$", r"NORM\1.\2.gamma"),
    (r"^mask_generator\.conv_layers\.(\d+)\.conv_layers\.([25])\.bias$", r"NORM\1.\2.beta"),
    *[
        (rf"^mask_generator\.conv_layers\.(\d+)\.conv_layers\.{i}\.", rf"masker.blocks.\1.{n}.")
        for i, n in _BLOCK.items()
        if i not in "25"
    ],
    (r"^mask_generator\.conv_layers\.(\d+)\.res_out\.", r"masker.blocks.\1.res_conv."),
    (r"^mask_generator\.conv_layers\.(\d+)\.skip_out\.", r"masker.blocks.\1.skip_conv."),
    (r"^mask_generator\.output_prelu\.", "masker.mask_prelu."),
    (r"^mask_generator\.output_conv\.", "masker.mask_conv."),
]


def load_checkpoint(path_or_obj) -> dict:
    """A peer's ``torch.save`` file with ``weights_only=True`` (no code is unpickled); the one
    class Asteroid packages need besides tensors, ``TorchVersion``, is allowed by name. A file
    that holds anything else is refused with a message that names it."""
    if isinstance(path_or_obj, dict):
        return path_or_obj
    import pickle

    from torch.torch_version import TorchVersion

    path = Path(path_or_obj)
    try:
        with torch.serialization.safe_globals([TorchVersion]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ""
        raise ConversionError(
            f"{path}: refused: it holds Python objects, not only tensors ({first}); loading "
            "it could run code, so the zoo only reads weight files (state dicts)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on a non-checkpoint
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConversionError(
            f"{path}: not a model: not a readable torch checkpoint ({type(exc).__name__}: "
            f"{why}); a model is a zoo folder (config.json + model.safetensors), an Asteroid "
            "or torchaudio checkpoint file, or an Open-Unmix folder"
        ) from None
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a dict of weights")
    return obj


def from_asteroid(path_or_pkg) -> tuple[nn.Module, dict]:
    """Build a zoo ``ConvTasNet`` from an Asteroid ConvTasNet package; returns
    ``(backbone, {"class_path", "init_args"})``."""
    pkg = load_checkpoint(path_or_pkg)
    for key in ("model_name", "model_args", "state_dict"):
        if key not in pkg:
            raise ConversionError(f"not an Asteroid model package: no {key!r} entry")
    name, a = pkg["model_name"], dict(pkg["model_args"])
    if name != "ConvTasNet":
        raise ConversionError(f"Asteroid model {name!r} has no zoo converter yet (ConvTasNet has)")
    n_filters, kernel = a.get("n_filters", 512), a.get("kernel_size", 16)
    checks = {
        "fb_name": (str(a.get("fb_name", "free")).lower().removesuffix("fb"), "free"),
        "stride": (a.get("stride", kernel // 2), kernel // 2),
        "causal": (a.get("causal", False), False),
        "encoder_activation": (a.get("encoder_activation") or "linear", "linear"),
        "out_chan": (a.get("out_chan") or n_filters, n_filters),
    }
    for field, (got, want) in checks.items():
        if got != want:
            raise ConversionError(
                f"Asteroid ConvTasNet with {field}={got!r} is not supported "
                f"(the zoo ConvTasNet has {field}={want!r})"
            )
    init_args = {
        "n_src": a["n_src"],
        "sample_rate": int(a.get("sample_rate", 8000)),
        "n_filters": n_filters,
        "kernel_size": kernel,
        "bn_chan": a.get("bn_chan", 128),
        "hid_chan": a.get("hid_chan", 512),
        "skip_chan": a.get("skip_chan", 128),
        "conv_kernel_size": a.get("conv_kernel_size", 3),
        "n_blocks": a.get("n_blocks", 8),
        "n_repeats": a.get("n_repeats", 3),
        "norm": a.get("norm_type", "gLN"),
        "mask_act": a.get("mask_act", "sigmoid"),
    }
    model = ConvTasNet(**init_args)
    model.load_state_dict(rename(pkg["state_dict"], ASTEROID_CONVTASNET), strict=True)
    return model.eval(), {"class_path": "zoo.backbones.ConvTasNet", "init_args": init_args}


def from_torchaudio_convtasnet(
    path_or_state,
    n_blocks: int = 8,
    n_repeats: int = 3,
    mask_act: str = "relu",
    sample_rate: int = 8000,
) -> tuple[nn.Module, dict]:
    """Build a zoo ``ConvTasNet`` from a ``torchaudio.models.ConvTasNet`` state dict.

    ``n_blocks`` x ``n_repeats`` (layers per stack x stacks), ``mask_act`` and ``sample_rate`` are
    not stored in the weights; the defaults are those of ``CONVTASNET_BASE_LIBRI2MIX``
    (``conv_tasnet_base``: 8 x 3, ReLU masks, 8 kHz).
    """
    state = load_checkpoint(path_or_state)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        enc = state["encoder.weight"]
        n_filters, kernel = enc.shape[0], enc.shape[2]
        bn_chan = state["mask_generator.input_conv.weight"].shape[0]
        hid_chan = state["mask_generator.conv_layers.0.conv_layers.0.weight"].shape[0]
        conv_kernel = state["mask_generator.conv_layers.0.conv_layers.3.weight"].shape[2]
        n_src = state["mask_generator.output_conv.weight"].shape[0] // n_filters
    except KeyError as exc:
        raise ConversionError(f"not a torchaudio ConvTasNet state dict: no {exc}") from exc
    n_layers = 1 + max(
        int(m.group(1))
        for k in state
        if (m := re.match(r"mask_generator\.conv_layers\.(\d+)\.", k))
    )
    if n_layers != n_blocks * n_repeats:
        raise ConversionError(
            f"the state dict has {n_layers} conv blocks, not n_blocks x "
            f"n_repeats = {n_blocks} x {n_repeats}"
        )
    init_args = {
        "n_src": n_src,
        "sample_rate": sample_rate,
        "n_filters": n_filters,
        "kernel_size": kernel,
        "bn_chan": bn_chan,
        "hid_chan": hid_chan,
        "skip_chan": bn_chan,
        "conv_kernel_size": conv_kernel,
        "n_blocks": n_blocks,
        "n_repeats": n_repeats,
        "norm": "gLN",
        "mask_act": mask_act,
        "framing": "torchaudio",
    }
    renamed = rename(state, TORCHAUDIO_CONVTASNET)
    fixed = {}
    for k, v in renamed.items():  # NORM<i>.<2|5>.<gamma|beta> -> masker.blocks.<i>.normX.*
        m = re.match(r"NORM(\d+)\.([25])\.(gamma|beta)$", k)
        fixed[f"masker.blocks.{m[1]}.norm{1 if m[2] == '2' else 2}.{m[3]}" if m else k] = v
    model = ConvTasNet(**init_args)
    model.load_state_dict(fixed, strict=True)
    return model.eval(), {"class_path": "zoo.backbones.ConvTasNet", "init_args": init_args}


# Keys of old Open-Unmix target checkpoints that are not network weights (the STFT window and the
# sample rate were module state in openunmix < 1.1): dropped by name, the rest loads strictly.
_OPENUNMIX_NON_WEIGHTS = re.compile(r"^((stft|transform\.\d+)\.window|sample_rate)$")


def _openunmix_target_file(folder: Path, target: str) -> Path:
    found = sorted(folder.glob(f"{target}.pth")) or sorted(folder.glob(f"{target}-*.pth"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise ConversionError(
            f"{folder}: expected one weights file {target}.pth or {target}-<hash>.pth, found {what}"
        )
    return found[0]


def from_openunmix(
    folder: str | Path,
    targets: list[str] | None = None,
    separator: dict | None = None,
    niter: int = 1,
    softmask: bool = False,
    residual: bool = False,
    wiener_win_len: int | None = 300,
) -> tuple[nn.Module, dict]:
    """Build a zoo ``OpenUnmix`` separator from an Open-Unmix model folder.

    Args:
        folder: holds ``<target>.pth`` (or ``<target>-<hash>.pth``) per target and
            ``separator.json`` (``nfft``, ``nhop``, ``sample_rate``, ``nb_channels``).
        targets: which targets, in output order (default: every ``<target>.json`` in the folder,
            else the four MUSDB18 targets that have weights).
        separator: the ``separator.json`` settings when the folder has none (published weights).
        niter, softmask, residual, wiener_win_len: the Wiener post-processing (as in
            ``openunmix.utils.load_separator``; not stored in the folder).

    Returns:
        ``(backbone, {"class_path", "init_args"})``.
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.glob("*.pth")):
        raise ConversionError(
            f"{folder}: not a model folder: a zoo model folder holds config.json and "
            "model.safetensors, an Open-Unmix folder its <target>.pth weights"
        )
    conf_file = folder / "separator.json"
    if separator is None:
        if not conf_file.is_file():
            raise ConversionError(
                f"{conf_file} is missing: pass separator={{'nfft', 'nhop', 'sample_rate'}}"
            )
        separator = json.loads(conf_file.read_text())
    if targets is None:
        targets = sorted(p.stem for p in folder.glob("*.json") if p.name != "separator.json")
        if not targets:
            musdb = ("vocals", "drums", "bass", "other")
            targets = [t for t in musdb if list(folder.glob(f"{t}*.pth"))]
        if not targets:
            raise ConversionError(f"{folder}: no <target>.json or <target>.pth files")
    states = {}
    for t in targets:
        path = _openunmix_target_file(folder, t)
        state = load_checkpoint(path)
        states[t] = {k: v for k, v in state.items() if not _OPENUNMIX_NON_WEIGHTS.match(k)}
    first = states[targets[0]]
    try:
        hidden = first["fc1.weight"].shape[0]
        max_bin = first["input_mean"].shape[0]
        nb_bins = first["output_scale"].shape[0]
        nb_channels = first["fc1.weight"].shape[1] // max_bin
        nb_layers = 1 + max(
            int(m.group(1)) for k in first if (m := re.match(r"lstm\.weight_ih_l(\d+)$", k))
        )
    except (KeyError, ValueError) as exc:
        raise ConversionError(f"{folder}: not Open-Unmix target weights ({exc})") from exc
    n_fft, rate = int(separator["nfft"]), int(separator["sample_rate"])
    if n_fft // 2 + 1 != nb_bins:
        raise ConversionError(
            f"{folder}: separator nfft={n_fft} gives {n_fft // 2 + 1} bins, the weights have "
            f"{nb_bins}"
        )
    if int(separator.get("nb_channels", nb_channels)) != nb_channels:
        raise ConversionError(
            f"{folder}: separator.json says {separator['nb_channels']} channels, the weights "
            f"{nb_channels}"
        )
    init_args = {
        "sources": list(targets),
        "sample_rate": rate,
        "n_fft": n_fft,
        "hop": int(separator["nhop"]),
        "nb_channels": nb_channels,
        "hidden_size": hidden,
        "nb_layers": nb_layers,
        "unidirectional": "lstm.weight_ih_l0_reverse" not in first,
        "bandwidth": None,
        "max_bin": max_bin,
        "niter": niter,
        "softmask": softmask,
        "residual": residual,
        "wiener_win_len": wiener_win_len,
    }
    model = OpenUnmix(**init_args)
    for t in targets:
        model.target_models[t].load_state_dict(states[t], strict=True)
    return model.eval(), {"class_path": "zoo.backbones.OpenUnmix", "init_args": init_args}


# RoFormer config keys: what they become, or why they are left (training-only, or a speed
# setting that does not change the outputs); any other key is an option the zoo does not build
ROFORMER_LOSS_OR_SPEED = {
    "attn_dropout", "ff_dropout", "flash_attn", "multi_stft_resolution_loss_weight",
    "multi_stft_resolutions_window_sizes", "multi_stft_hop_size", "multi_stft_normalized",
    "use_torch_checkpoint", "sage_attention", "match_input_audio_length",
}  # fmt: skip
# options of later package versions or forks whose default means "not used"
ROFORMER_OFF = {
    "linear_transformer_depth": 0, "skip_connection": False, "mlp_expansion_factor": 4,
    "stft_normalized": False, "zero_dc": False, "freq_range": None, "num_residual_streams": 1,
    "num_residual_fracs": 1, "use_pope": False, "add_value_residual": False,
}  # fmt: skip


def _read_yaml(path: Path) -> dict:
    """A Music-Source-Separation-Training config: YAML with ``!!python/tuple`` sequences (read
    as lists; no other Python tag is accepted)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor(
        "tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node)
    )
    try:
        config = yaml.load(Path(path).read_text(), Loader=Loader)  # noqa: S506 - a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise ConversionError(f"{path}: not a readable RoFormer config ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConversionError(f"{path}: no 'model:' section (a RoFormer config has one)")
    return config


def roformer_config_path(ckpt: Path) -> Path:
    """The YAML config that goes with a RoFormer checkpoint: ``<stem>.yaml`` beside it, else
    the only ``*.yaml`` in its folder."""
    ckpt = Path(ckpt)
    same = ckpt.with_suffix(".yaml")
    if same.is_file():
        return same
    found = sorted(ckpt.parent.glob("*.yaml"))
    if len(found) == 1:
        return found[0]
    raise ConversionError(
        f"{ckpt}: a RoFormer checkpoint needs its YAML config: put it beside the checkpoint as "
        f"{same.name} (or pass config=)"
    )


def from_roformer(path, config: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Build a zoo :class:`~zoo.backbones.RoFormer` from a BS-/Mel-RoFormer checkpoint of the
    ``bs-roformer`` layout and its YAML config; returns ``(backbone, {"class_path",
    "init_args"})``.

    Args:
        path: the checkpoint (a state dict, ``.ckpt`` / ``.pth``; read without unpickling code).
        config: its YAML (default: :func:`roformer_config_path`; a relative name is looked up
            beside the checkpoint).
    """
    path = Path(path)
    cfg_path = Path(config) if config else roformer_config_path(path)
    if config and not cfg_path.is_absolute() and not cfg_path.is_file():
        cfg_path = path.parent / cfg_path
    cfg = _read_yaml(cfg_path)
    m, training = dict(cfg["model"]), cfg.get("training") or {}
    mel = "num_bands" in m
    for key, off in ROFORMER_OFF.items():
        if key in m and m[key] != off and not (off is None and m[key] in (None, [-1, -1])):
            raise ConversionError(
                f"{cfg_path}: model.{key}: {m[key]!r} is an option the zoo's RoFormer does not "
                f"build (only {off!r}): this checkpoint cannot be converted"
            )
    known = {"dim", "depth", "stereo", "num_stems", "time_transformer_depth",
             "freq_transformer_depth", "freqs_per_bands", "num_bands", "sample_rate", "dim_head",
             "heads", "dim_freqs_in", "stft_n_fft", "stft_hop_length", "stft_win_length",
             "mask_estimator_depth", *ROFORMER_LOSS_OR_SPEED, *ROFORMER_OFF}  # fmt: skip
    unknown = sorted(set(m) - known)
    if unknown:
        raise ConversionError(
            f"{cfg_path}: model.{unknown[0]} is an option the zoo's RoFormer does not build: "
            "this checkpoint cannot be converted"
        )
    n_stems = int(m.get("num_stems", 1))
    instruments = list(training.get("instruments") or [])
    if n_stems == len(instruments):
        sources = instruments
    elif n_stems == 1 and training.get("target_instrument"):
        sources = [training["target_instrument"]]
    else:
        raise ConversionError(
            f"{cfg_path}: num_stems {n_stems} but training.instruments {instruments} and no "
            "target_instrument: cannot name the outputs"
        )
    n_fft = int(m.get("stft_n_fft", 2048))
    if int(m.get("dim_freqs_in", n_fft // 2 + 1)) != n_fft // 2 + 1:
        raise ConversionError(f"{cfg_path}: dim_freqs_in {m['dim_freqs_in']} != n_fft // 2 + 1")
    depth = int(m.get("mask_estimator_depth", 1 if mel else 2))
    rate = int(m.get("sample_rate") or (cfg.get("audio") or {}).get("sample_rate") or 44100)
    args = {
        "sources": sources,
        "sample_rate": rate,
        "bands": "mel" if mel else "split",
        "dim": int(m["dim"]),
        "depth": int(m["depth"]),
        "time_depth": int(m.get("time_transformer_depth", 2)),
        "freq_depth": int(m.get("freq_transformer_depth", 2)),
        "heads": int(m.get("heads", 8)),
        "dim_head": int(m.get("dim_head", 64)),
        "n_fft": n_fft,
        "hop": int(m.get("stft_hop_length", 512)),
        "win_length": int(m.get("stft_win_length", n_fft)),
        # the package's BS-RoFormer counts the mask MLP's layers, its Mel-RoFormer the hidden
        # ones: the zoo counts layers
        "mask_depth": depth + 1 if mel else depth,
        "norm_output": mel,  # the Mel-RoFormer normalises after each transformer
        "audio_channels": 2 if m.get("stereo", False) else 1,
    }
    if mel:
        args["n_bands"] = int(m.get("num_bands", 60))
    else:
        args["band_widths"] = [int(w) for w in m.get("freqs_per_bands") or ()] or None
        if args["band_widths"] is None:
            del args["band_widths"]
    state = load_checkpoint(path)
    state = state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state
    state = {k.removeprefix("model."): v for k, v in state.items()}
    later = [k for k in state if "value_residual" in k or "expand_stream" in k or ".branch." in k]
    if later:
        raise ConversionError(
            f"{path}: {later[0]}: a later bs-roformer option (value residuals or hyper-"
            "connections) the zoo's RoFormer does not build"
        )
    dim_head = args["dim_head"]
    default = 1.0 / 10000 ** (torch.arange(0, dim_head, 2).float() / dim_head)
    for k in [k for k in state if k.endswith("rotary_embed.freqs")]:
        if not torch.allclose(state.pop(k).float(), default):
            raise ConversionError(f"{path}: {k}: rotary frequencies other than the default")
    try:
        backbone = RoFormer(**args)
        backbone.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ConversionError(f"{path}: does not match its config {cfg_path} ({first})") from None
    return backbone.eval(), {"class_path": "zoo.backbones.RoFormer", "init_args": args}
