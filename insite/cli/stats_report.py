"""How ``insite coord stats`` shows the sites' data statistics: a table, one column per site."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from deploy.coordinator.statistics_view import side_by_side
from insite.cli.terminal import console


def print_statistics(statistics: dict[str, Any]) -> None:
    """The side-by-side table; a failed site's column says why it failed."""
    rows = side_by_side(statistics)
    sites = list(rows[0]["sites"]) if rows else []
    minimum = statistics["settings"]["min_count"]
    table = Table(title=f"data statistics (counts from 1 to {minimum - 1} withheld)", show_lines=True)
    table.add_column("figure", style="bold")
    for site in sites:
        table.add_column(site)
    for row in rows:
        table.add_row(row["figure"], *(row["sites"][site] for site in sites))
    console.print(table)
