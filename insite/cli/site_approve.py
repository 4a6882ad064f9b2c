"""``insite site approve-app | approved | revoke-app``: which app code this site runs.

Argument handling and presentation only; the work is in :mod:`deploy.site.app_approval`. The SuperNode
refuses every app whose digest is not on this list (see :mod:`deploy.site.clientapp_gate`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Column, Table

from deploy.site.app_approval import approvals, approve_app, fab_digest, revoke
from insite.cli.terminal import console

CacheOption = typer.Option(
    ...,
    "--cache",
    envvar="INSITE_SITE_CACHE",
    help="the site's cache folder (the SuperNode's cache-path); the approval list lives there",
)


def approve_app_command(
    path: Path = typer.Argument(..., help="the app folder you reviewed (what `flwr run` ships) or a .fab bundle"),
    cache: Path = CacheOption,
    note: str = typer.Option("", "--note", help="why, or which release: kept with the approval"),
) -> None:
    """Approve an app: this site's SuperNode will run the exact bundle with this digest, nothing else."""
    approval = approve_app(cache, fab_digest(path), note)
    console.print(f"approved {approval.digest} ({path}) at {approval.approved_at}", highlight=False, soft_wrap=True)


def approved_command(
    cache: Path = CacheOption, as_json: bool = typer.Option(False, "--json", help="print the list as JSON")
) -> None:
    """List the apps this site runs."""
    apps = approvals(cache)
    if as_json:
        print(json.dumps([asdict(a) for a in apps], indent=1))
        return
    if not apps:
        console.print("no app is approved: this site refuses every run ('insite site approve-app')")
        return
    table = Table(Column("digest (SHA-256 of the app bundle)", no_wrap=True), "approved at", "note")
    for app in apps:
        table.add_row(app.digest, app.approved_at, app.note)
    console.print(table)


def revoke_app_command(
    digest: str = typer.Argument(..., help="the digest to remove, as 'insite site approved' shows it"),
    cache: Path = CacheOption,
) -> None:
    """Revoke an approval: from its next message on, the site refuses that app."""
    approval = revoke(cache, digest)
    console.print(f"revoked {approval.digest} (approved {approval.approved_at})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the app-approval commands to ``insite site``."""
    app.command(name="approve-app")(approve_app_command)
    app.command(name="approved")(approved_command)
    app.command(name="revoke-app")(revoke_app_command)
