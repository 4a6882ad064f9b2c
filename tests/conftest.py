"""Fixtures every test folder shares: the ``insite`` CLI run in-process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from insite.cli import main


class CommandResult(NamedTuple):
    """What one ``insite`` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str

    def one_line_error(self, *expected: str) -> None:
        """Exit 2, no traceback, one 'error:' line holding every ``expected`` text."""
        assert self.code == 2, self.out + self.err
        assert "Traceback" not in self.err
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), self.err
        for text in expected:
            assert text in self.err, self.err


@pytest.fixture()
def insite(capsys, monkeypatch):
    """``insite ARGS...`` through the real entry point (error handling included), in this process.

    In-process because every fresh ``insite`` process imports torch and MONAI: tens of seconds
    each on the shared 2-core test machine.
    """

    def run(*args: str | Path) -> CommandResult:
        monkeypatch.setattr(sys, "argv", ["insite", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return CommandResult(code, captured.out, captured.err)

    return run
