"""Every option of every command says what it does, and the help text matches the layout of the
help page (no "see below" for a list printed above)."""

from __future__ import annotations

import click
import pytest
from conftest import invoke

from edge3d.cli import main


def _commands():
    for name, command in sorted(main.commands.items()):
        yield pytest.param(command, id=name)


@pytest.mark.parametrize("command", list(_commands()))
def test_every_option_has_help(command):
    missing = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not missing, f"{command.name}: {missing} have no help text"


@pytest.mark.parametrize("command", list(_commands()))
def test_help_renders_and_points_nowhere_it_cannot(command):
    result = invoke(command.name, "--help")
    assert result.exit_code == 0 and "see below" not in result.stdout


def test_lint_of_a_folder_names_it_a_folder(tmp_path):
    result = invoke("lint", tmp_path)
    assert result.exit_code == 2 and "is a folder; pass the ONNX model file itself" in result.stderr
