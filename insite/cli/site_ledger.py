"""``insite site ledger verify | show``: what left this site, for its administrator and auditors.

Presentation only; the ledger itself is :mod:`client.ledger`, written by :mod:`client.egress`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from client.ledger import Ledger
from common.errors import ConfigError
from insite.cli.site_approve import CacheOption
from insite.cli.terminal import EXIT_CHECK_FAILED, command_group, console

app = command_group(help="The site's egress ledger: every reply that left it.")


@app.command()
def verify(cache: Path = CacheOption) -> None:
    """Check the ledger's hash chain: any edited, deleted, inserted or reordered entry is reported.

    Exit code 0 when intact, 1 when not (so a monitoring job can alert on it).
    """
    ledger = _ledger(cache)
    check = ledger.verify()
    if check.intact:
        console.print(
            f"ledger intact: {check.entries} entries, chain and end verified ({ledger.path})",
            highlight=False,
            soft_wrap=True,
        )
        return
    console.print(
        f"[bold red]ledger NOT intact[/] ({ledger.path}, {check.entries} entries):", highlight=False, soft_wrap=True
    )
    for problem in check.problems:
        console.print(f"  - {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
def show(
    cache: Path = CacheOption,
    run: int = typer.Option(None, "--run", help="only this Flower run id"),
    as_json: bool = typer.Option(False, "--json", help="print the entries as JSON lines"),
) -> None:
    """List what left the site: when, for which run and round, how many bytes, and what it was."""
    entries = [e for e in _ledger(cache).entries() if run is None or e.get("run") == run]
    if as_json:
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
        return
    if not entries:
        console.print("nothing has left this site yet (no ledger entries)")
        return
    table = Table("#", "time (UTC)", "run", "round", "kind", "bytes", "what left")
    for entry in entries:
        if "unreadable" in entry:
            table.add_row("?", "", "", "", "unreadable line", "", str(entry["unreadable"])[:80])
            continue
        table.add_row(
            str(entry["seq"]),
            entry["time"].replace("T", " ")[:23],
            str(entry["run"]),
            str(entry["round"] if entry["round"] is not None else "-"),
            entry["kind"],
            f"{entry['bytes']:,}",
            entry["detail"],
        )
    console.print(table)
    total = sum(e.get("bytes", 0) for e in entries)
    console.print(
        f"{len(entries)} messages, {total:,} bytes in total; 'insite site ledger verify' checks nothing was altered",
        highlight=False,
    )


def _ledger(cache: Path) -> Ledger:
    if not cache.is_dir():
        raise ConfigError(
            f"{cache} is not a folder: give the site's cache folder (cache_path in site.toml, or $INSITE_SITE_CACHE)"
        )
    return Ledger(cache)


def register(parent: typer.Typer) -> None:
    """Add ``insite site ledger`` to ``insite site``."""
    parent.add_typer(app, name="ledger")
