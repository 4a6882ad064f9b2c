"""``insite site stats --dry-run``: exactly what this site would send when the coordinator asks for statistics."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from client.cases import discover_cases
from client.egress import check_reply
from client.statistics import statistics_reply
from common.errors import ConfigError
from common.settings import load_run_settings
from common.statistics import RECORD, WITHHELD
from configs import shipped
from deploy.site.settings import load_site_settings
from insite.cli.site_data import stage_progress
from insite.cli.terminal import console, say

SHIPPED_RUN_SETTINGS = shipped("federation.toml")


def stats(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Compute and show the record; send nothing (the only mode: see below)."
    ),
    config: Path = typer.Option(
        Path("site.toml"), "--config", help="This site's settings (site.toml): its name and data folder."
    ),
    run_settings: Path = typer.Option(
        SHIPPED_RUN_SETTINGS,
        "--run-settings",
        help="The run settings whose \\[run.stats] bins and minimum count apply (the coordinator's federation.toml).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON, name -> count (-1 = withheld)."),
) -> None:
    """Show the data statistics this site would send, checked by its egress guard, without any network.

    The record is made by the same code the site's ClientApp runs when the coordinator asks
    ('insite coord stats'), and passes the same egress guard: binned counts only, no per-case
    value, minimum or maximum; counts from 1 to min_count-1 are withheld. Statistics leave the
    site only on the coordinator's request, so --dry-run is required.
    """
    if not dry_run:
        raise ConfigError(
            "insite site stats: statistics leave only when the coordinator asks; add --dry-run to see them"
        )
    site = load_site_settings(config)
    settings = load_run_settings(run_settings)
    stats = settings.stats.at_site(site.stats_min_count)
    total = len(discover_cases(site.name, site.data_path))
    with stage_progress({"statistics of cases": total}, as_json) as advance:
        content = statistics_reply(site.name, site.data_path, stats, lambda: advance("statistics of cases"))
    check_reply(content, settings.model, site.name, stats)
    values = dict(content.metric_records[RECORD])
    if as_json:
        print(json.dumps({"site": site.name, RECORD: values}, indent=1))
        return
    table = Table(title=f"what site {site.name} would send ('{RECORD}' record; egress guard passed)")
    table.add_column("statistic")
    table.add_column("count", justify="right")
    for name, value in values.items():
        table.add_row(name, "withheld" if value == WITHHELD else str(value))
    console.print(table)
    withheld = sum(value == WITHHELD for value in values.values())
    say(f"{len(values)} counts, {withheld} withheld (min_count {stats.min_count}); nothing was sent")


def register(app: typer.Typer) -> None:
    """Add the statistics command to ``insite site``."""
    app.command()(stats)
