"""The ``zoo`` command: a table of sub-commands, each one function of the run layer.

Each sub-command's arguments and help are generated from its function's signature and Google
docstring, so the command line cannot drift from what the functions take. ``zoo fit | validate
| test | predict`` hand over to LightningCLI. Errors a user can fix (:class:`zoo.errors.UserError`
and the built-in errors of bad input: a wrong value, a missing file) print one line naming the
culprit and exit 2; running out of memory prints one line saying what to lower; anything else
is an internal error and shows its traceback. ``--debug`` (or ``ZOO_DEBUG=1``) shows the
traceback of every error.

Why not ``jsonargparse.CLI`` (tried on these functions, jsonargparse 4.53): it spells options
as the parameters are named (``--out_dir``, no ``--out-dir``), takes booleans as values
(``--resume true`` instead of ``--resume``), has no short options (``-o``), and refuses the
LightningCLI overrides that ``zoo recipe`` passes through (``--trainer.max_epochs=3``): every
documented command line would change. The ~50 lines below keep them, with the same source of
truth (signatures and docstrings, parsed by ``docstring_parser`` as jsonargparse does).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable

from .errors import UserError

__all__ = ["COMMANDS", "main"]


def _show_results(r: dict) -> None:
    what = (
        f"SDR {r['sdr']:.2f} dB ("
        + ", ".join(f"{k} {v['sdr']:.2f}" for k, v in r["targets"].items())
        + ")"
        if "targets" in r
        else f"SI-SDRi {r.get('si_sdri', float('nan')):.2f} dB"
        + (f", SDRi {r['sdri']:.2f} dB" if r.get("sdri") is not None else "")
    )
    who = r.get("model") or r.get("recipe")
    print(
        f"[zoo] {who}: {what} over {r.get('n_items')} items"
        + (" (mini data)" if r.get("mini") else "")
    )


def _show_list(models: dict) -> None:
    for name, entry in sorted(models.items()):
        print(f"{name:36s} {entry['format']:22s} {entry.get('description', '')}")


def _show_lines(items) -> None:
    print("\n".join(str(x) for x in (items if isinstance(items, list) else [items])))


def _show_export(r: dict) -> None:
    print(
        f"{r['path']}: {r['architecture']} at {r['sample_rate']} Hz, sources "
        f"{', '.join(r['sources'])}; exported vs PyTorch max abs error "
        f"{r['max_abs_error']:.1e} on {', '.join(str(tuple(x)) for x in r['checked_shapes'])} "
        f"({r['exporter']} exporter)" + "".join(f"; {n}" for n in r["notes"])
    )


def _show_push(r: dict) -> None:
    print(f"[zoo] pushed {', '.join(r['files'])} to {r['repo']} at commit {r['commit']}")
    print(f"[zoo] load it with zoo.load({r['url']!r})")


def _show_rows(rows: list[dict]) -> None:
    for r in rows:
        _show_results(r)


# name -> (function "module:attr", how to show its return value, short options, pass-through)
COMMANDS: dict[str, tuple[str, Callable | None, dict, bool]] = {
    "recipe": ("zoo.run.train:run_recipe", None, {}, True),
    "recipes": ("zoo.run.recipe:available_recipes", _show_lines, {}, False),
    "prepare": ("zoo.run.prepare:prepare", None, {}, False),
    "export": ("zoo.run.export:export_checkpoint", _show_lines, {"out_dir": ["-o"]}, False),
    "export-onnx": ("zoo.run.onnx:export_onnx", _show_export, {"out": ["-o"]}, False),
    "export-torchscript": (
        "zoo.run.onnx:export_torchscript",
        _show_export,
        {"out": ["-o"]},
        False,
    ),
    "list": ("zoo.hub.registry:list_models", _show_list, {}, False),
    "download": ("zoo.hub.registry:download", _show_lines, {}, False),
    "push": ("zoo.hub.hf:push", _show_push, {}, False),
    "separate": (
        "zoo.run.separate:separate_file",
        _show_lines,
        {"out_dir": ["-o"], "chunk_seconds": ["--chunk"]},
        False,
    ),
    "evaluate": ("zoo.run.evaluate:evaluate", _show_results, {"out": ["-o"]}, False),
    "oracle": ("zoo.run.evaluate:run_oracles", _show_rows, {}, False),
    "slurm": ("zoo.run.launch:slurm_script", lambda s: print(s, end=""), {}, True),
    "leaderboard": ("zoo.run.leaderboard:write_leaderboard", _show_lines, {"out": ["-o"]}, False),
}
LIGHTNING = ("fit", "validate", "test", "predict")
HIDDEN = {"quiet", "cache_dir"}  # for Python callers only


def _function(cmd: str) -> Callable:
    module, _, attr = COMMANDS[cmd][0].partition(":")
    return getattr(importlib.import_module(module), attr)


def _docs(fn: Callable) -> tuple[str, dict[str, str]]:
    import docstring_parser

    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    text = doc.description or ""
    params = {}
    for p in doc.params:  # "a, b: text" documents both
        for name in p.arg_name.replace(" ", "").split(","):
            params[name] = p.description or ""
    return text, params


def _base_type(annotation):
    """``int | None`` -> int; ``list[str]`` -> (list, str); no annotation -> str."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):  # several values: nargs="+"
        return (list, (typing.get_args(annotation) or (str,))[0])
    if annotation is inspect.Parameter.empty or not isinstance(annotation, type):
        return str
    return annotation


def build_parser(cmd: str, fn: Callable) -> argparse.ArgumentParser:
    """The sub-command's parser, generated from ``fn``'s signature and docstring."""
    text, helps = _docs(fn)
    p = argparse.ArgumentParser(
        prog=f"zoo {cmd}", description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    short = COMMANDS[cmd][2]
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        if name in HIDDEN or (COMMANDS[cmd][3] and name == "overrides"):
            continue
        kind = _base_type(hints.get(name, inspect.Parameter.empty))
        elem = kind[1] if isinstance(kind, tuple) else kind
        elem = elem if elem in (int, float, str) else str  # paths and the like: as given
        h = helps.get(name, "")
        required = param.default is inspect.Parameter.empty
        flags = [*short.get(name, []), "--" + name.replace("_", "-")]
        if required and name in short:  # a required option (``-o DIR``)
            p.add_argument(*flags, dest=name, type=elem, required=True, help=h)
            continue
        if required:
            nargs = "+" if isinstance(kind, tuple) else None
            p.add_argument(name, type=elem, nargs=nargs, help=h)
            continue
        if kind is bool:
            p.add_argument(*flags, dest=name, action="store_true", default=param.default, help=h)
        elif isinstance(kind, tuple):
            p.add_argument(*flags, dest=name, type=elem, nargs="+", default=param.default, help=h)
        else:
            default = param.default
            h = f"{h} (default: {default})" if default is not None else h
            p.add_argument(*flags, dest=name, type=elem, default=default, help=h)
    p.add_argument("--data-dir", help="where the built-in mini datasets live ($ZOO_DATA_DIR)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    if COMMANDS[cmd][3]:
        p.epilog = "Further arguments are LightningCLI overrides, applied last."
    return p


def usage() -> str:
    lines = [
        "usage: zoo <command> [...]   (zoo <command> --help for its arguments)",
        "",
        "commands:",
    ]
    for cmd in COMMANDS:
        text, _ = _docs(_function(cmd))
        first = " ".join(text.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
        lines.append(f"  {cmd:12s} {first}")
    lines.append(f"  {' | '.join(LIGHTNING)}   LightningCLI (zoo fit --help)")
    return "\n".join(lines)


# errors a user can fix: one line. RuntimeError and OSError in general are not among them (an
# internal error shows its traceback); the zoo's own runtime errors are UserErrors.
USER_ERRORS = (
    UserError,
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    TimeoutError,
)


# the file system refusing a write or a read (full disk, read-only, no permission): the user's
# to fix, whatever layer met it (libsndfile reports a full disk as a RuntimeError)
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _user_fixable(exc: BaseException) -> bool:
    if isinstance(exc, USER_ERRORS):
        return True
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return True
    return isinstance(exc, RuntimeError) and "No space left on device" in str(exc)


def _one_line(exc: BaseException) -> str:
    """The message of a user error. A report that wraps the error in many lines (jsonargparse's
    "Does not validate against any of the Union subtypes" when a class refuses its arguments)
    gives way to the error it was raised from; from a data-loading worker (whose message
    carries the worker's traceback: "Caught X in DataLoader worker process 0. Original
    Traceback ..."), the original error's own line."""
    while "\n" in str(exc).strip() and exc.__cause__ is not None:
        exc = exc.__cause__
    msg = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if "Original Traceback" in msg:
        last = [line for line in msg.strip().splitlines() if line.strip()][-1]
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        msg = last.removeprefix(prefix).removeprefix(f"{type(exc).__name__}: ")
    return msg


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):  # CUDA's is a RuntimeError
        return True
    text = str(exc)  # the CPU allocator's
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _oom_message(cmd: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return (
        f"zoo {cmd}: out of memory ({first}): lower the batch size "
        "(--data.init_args.batch_size), the training segment (--data.init_args.segment) or "
        "the evaluation chunk (--model.eval_chunk_seconds), use --trainer.precision=bf16-mixed, "
        "or checkpoint the network's blocks (checkpoint_blocks: true where the backbone has it)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in LIGHTNING:
        from .run.build import option_value

        ckpt = option_value(rest, "--ckpt_path")
        if ckpt in ("last", "hpc"):  # Lightning finds none in a new run's folder: it starts anew
            print(
                f"zoo {cmd}: error: --ckpt_path {ckpt} looks for a checkpoint in the folder of the "
                "run this command starts, where there is none (it would train from scratch): "
                "resume a recipe run with `zoo recipe NAME --resume` (make recipe NAME=... "
                "RESUME=1), or pass the checkpoint file itself",
                file=sys.stderr,
            )
            return 2
        from .run.build import ZooCLI

        ZooCLI(args=argv)
        return 0
    if cmd not in COMMANDS:
        print(f"zoo: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    fn = _function(cmd)
    parser = build_parser(cmd, fn)
    args, extra = (
        parser.parse_known_args(rest) if COMMANDS[cmd][3] else (parser.parse_args(rest), [])
    )
    kwargs = vars(args)
    debug = kwargs.pop("debug") or os.environ.get("ZOO_DEBUG") == "1"
    data_dir = kwargs.pop("data_dir")
    if data_dir:  # DDP workers re-run this command line, so they see it too
        os.environ["ZOO_DATA_DIR"] = data_dir
    if COMMANDS[cmd][3]:
        kwargs["overrides"] = extra
    from .run.checkpoints import Interrupted

    try:
        out = fn(**kwargs)
    except Interrupted as exc:  # SIGTERM: a checkpoint was saved; 128 + 15, as a killed process
        print(f"zoo {cmd}: {exc}", file=sys.stderr)
        return 143
    except Exception as exc:  # noqa: BLE001 - sorted below; the rest is re-raised
        if debug:
            raise
        if _out_of_memory(exc):
            print(_oom_message(cmd, exc), file=sys.stderr)
            return 2
        if not _user_fixable(exc):
            raise  # an internal error: its traceback
        print(f"zoo {cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    show = COMMANDS[cmd][1]
    if show is not None and out is not None:
        show(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
