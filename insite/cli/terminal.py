"""How ``insite`` talks to the person at the terminal: its consoles and its command groups.

Output piped to a log file is written as whole lines: rich would otherwise wrap it at 80 columns
and split numbers and paths across lines. Help text is rich markup: a literal bracket in a help
string is written ``\\[deid]``, or rich takes it for a tag and drops it (tests/ops/test_cli_help.py
checks that every command's help shows each bracketed word it was written with).
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

#: Exit codes, the same for every command (and stated in ``insite --help``).
EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# A log viewer wraps long lines itself; only a terminal needs rich to fit its width.
NOT_A_TERMINAL_WIDTH = 10_000


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else NOT_A_TERMINAL_WIDTH)


console = _console(stderr=False)
err_console = _console(stderr=True)


def say(text: str) -> None:
    """One message for the operator; never wrapped mid-path, so paths can be copied as printed."""
    console.print(text, highlight=False)


def command_group(**options: Any) -> typer.Typer:
    """A Typer group with insite's conventions: help when called bare, no tracebacks, no completion."""
    return typer.Typer(
        no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False, add_completion=False, **options
    )


def check_failed(problem: str) -> typer.Exit:
    """Report what a check found, on one line, and the exit that says so (code 1, not 2)."""
    err_console.print(f"[bold red]check failed:[/] {escape(problem)}", highlight=False)
    return typer.Exit(EXIT_CHECK_FAILED)


def run_paused(record: dict, continue_with: str) -> typer.Exit:
    """Report a paused run (too few sites for too long) and the exit that says so (code 3)."""
    err_console.print(
        f"[bold yellow]paused:[/] {escape(str(record.get('paused')))}; continue with '{escape(continue_with)}'",
        highlight=False,
    )
    return typer.Exit(EXIT_PAUSED)
