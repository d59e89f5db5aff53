"""run-recipe dispatches through a table of commands: each first word has a handler and a parser, so --help
and a generated CLI reference can reach every command without running it."""
from __future__ import annotations

import argparse

import pytest

from tasks.cli import main as cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_a_parser_with_help(name: str) -> None:
    made = cli.COMMANDS[name].parser(name)
    assert isinstance(made, argparse.ArgumentParser)
    assert made.format_help().strip()


def test_the_table_names_every_command_the_cli_knows() -> None:
    assert set(cli.COMMANDS) == {"lint", "bench", "stack", "plan", *cli.SUPERVISE, *cli.SUBCOMMANDS}


def test_a_command_word_reaches_its_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []
    monkeypatch.setitem(cli.COMMANDS, "stop", cli.Command(lambda name, args: seen.append((name, args)) or 7,
                                                          cli.COMMANDS["stop"].parser))
    assert cli.main(["stop", "x", "--all"]) == 7
    assert seen == [("stop", ["x", "--all"])]
