"""``insite export`` and ``insite verify``: publish the consensus model, and check a publication."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from insite.cli.terminal import EXIT_CHECK_FAILED
from insite.cli.terminal import console as _out
from publication.export import export_run
from publication.manifest.approvals import default_collected_path
from publication.verify import VerifyReport, verify_export

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _show(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "folder": str(report.folder),
                    "ok": report.ok,
                    "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
                },
                indent=1,
            )
        )
        return
    table = Table("check", "result", "detail")
    for check in report.checks:
        table.add_row(check.name, "[green]pass[/]" if check.ok else "[red]FAIL[/]", check.detail)
    _out.print(table)


def export(
    run: Annotated[Path, typer.Argument(help="the coordinator's run directory")],
    manifest: Annotated[Path, typer.Option(help="the approved manifest")],
    out: Annotated[Path, typer.Option(help="new folder for the export")],
    keys: Annotated[Path, typer.Option(help="folder of the consortium's <site>.pub keys")],
    approvals: Annotated[Path | None, typer.Option(help="default <manifest>.approvals.json")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export RUN's consensus model as a MONAI bundle, if every contributing site approved."""
    result = export_run(run, manifest, approvals or default_collected_path(manifest), keys, out)
    _show(result.report, as_json)
    if not as_json:
        _out.print(f"[green]exported and verified:[/] {result.bundle}")


def verify(
    folder: Annotated[Path, typer.Argument(help="an export folder written by 'insite export'")],
    keys: Annotated[Path | None, typer.Option(help="your copy of the consortium's public keys")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check checksums, signatures, policy and bundle metadata; exit 1 if any check fails."""
    report = verify_export(folder, keys)
    _show(report, as_json)
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)
