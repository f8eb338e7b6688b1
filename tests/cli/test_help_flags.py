"""In every command's ``--help`` a flag shows no value type (``--json``, not ``--json <bool>``); options
that take a value keep theirs."""
from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from bastion.cli.app import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, sub in getattr(command, "commands", {}).items():  # a group's subcommands
        out += _commands(sub, (*path, name))
    return out


def test_no_help_page_shows_a_type_for_a_flag():
    paths = _commands(typer.main.get_command(app))
    assert ("sync",) in paths and ("user", "add") in paths and len(paths) > 40
    runner = CliRunner()
    for path in paths:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"})
        assert r.exit_code == 0, (path, r.output)
        assert "<bool>" not in r.output, (path, r.output)
    sync = runner.invoke(app, ["sync", "--help"], env={"COLUMNS": "300"}).output
    assert "<int range>" in sync  # an option with a value keeps its type
