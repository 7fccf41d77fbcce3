"""The command table: arguments generated from the functions, one-line user errors."""

import pytest

from zoo.cli import COMMANDS, _function, build_parser, main


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_has_generated_help_for_every_argument(cmd, capsys):
    import inspect

    fn = _function(cmd)
    parser = build_parser(cmd, fn)
    helped = {a.dest for a in parser._actions if a.help}
    for name in inspect.signature(fn).parameters:
        if name in ("overrides", "quiet", "cache_dir"):
            continue
        assert name in helped, f"zoo {cmd}: {name} has no help (document it in the docstring)"
    with pytest.raises(SystemExit) as done:
        main([cmd, "--help"])
    assert done.value.code == 0 and f"zoo {cmd}" in capsys.readouterr().out


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    missing = str(tmp_path / "nope")
    assert main(["separate", "convtasnet-tiny-random", missing, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo separate: error:") and len(err.strip().splitlines()) == 1
    assert "convtasnet-tiny-random is not in the cache" in err and "zoo download" in err
    with pytest.raises(Exception, match="not in the cache"):
        main(["separate", "convtasnet-tiny-random", missing, "-o", str(tmp_path), "--debug"])
    assert main(["prepare", "nope-mini"]) == 2
    assert "unknown dataset 'nope-mini'" in capsys.readouterr().err
