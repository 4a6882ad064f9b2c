"""Every command's ``--help`` shows the words it was written with, brackets included.

Typer renders help as rich markup, where ``[deid]`` is a tag and silently disappears; help text
must write it ``\\[deid]``. This walks every command of ``insite`` and checks each bracketed word.
"""

from __future__ import annotations

import re

import click
import typer

from insite.cli import app

BRACKETED = re.compile(r"\\?\[([^\]\s][^\]]*)\]")


def commands(group: click.Command, path: tuple[str, ...] = ()):
    yield path, group
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from commands(command, (*path, name))


def written_help(command: click.Command) -> str:
    texts = [command.help or "", command.epilog or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    return "\n".join(texts)


def test_bracketed_words_survive_into_every_help(insite, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    checked = 0
    for path, command in commands(typer.main.get_command(app)):
        words = BRACKETED.findall(written_help(command))
        if not words:
            continue
        shown = " ".join(insite(*path, "--help").out.split())
        for word in words:
            assert f"[{' '.join(word.split())}]" in shown, (path, word)
            checked += 1
    assert checked  # the CLI does use brackets in its help


def test_help_states_the_exit_codes(insite, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    shown = insite("--help").out
    assert "1: a check ran and found a problem" in shown and "2: the command could not do its work" in shown
