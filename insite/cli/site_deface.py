"""``insite site deface``: remove the faces from the head series of a de-identified folder.

Argument handling and presentation only; the work is in :mod:`siteprep.deface`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from insite.cli.site_data import JsonOption, print_json, stage_progress
from insite.cli.terminal import console
from siteprep.deface.tree import check_layout, deface_tree
from siteprep.deid.settings import SHIPPED_PROFILE, load_deid_settings


def deface(
    source: Path = typer.Argument(..., help="de-identified DICOM folder (the output of `insite site deid`)"),
    destination: Path = typer.Argument(..., help="output folder: defaced head series + every other series unchanged"),
    quarantine: Path = typer.Option(
        None, help="where head series that cannot be defaced with confidence go (default: DST-quarantine beside DST)"
    ),
    qa_folder: Path = typer.Option(
        None, "--qa-folder", help="QA pictures, before/after (default: DST-deface-qa beside DST; they show faces)"
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="settings with a \\[deid.deface] table (default: the shipped profile)"
    ),
    report: Path = typer.Option(None, help="report JSON (default: DST/deface-report-<time>.json)"),
    as_json: bool = JsonOption,
) -> None:
    """Deface the head CT and MR series of SRC into DST (PS3.15 Clean Recognizable Visual Features).

    A head template with a face mask (pydeface's) is registered to each series whose header names
    the head (or names no body part), and the voxels under the mask become air. The series is
    written as a new one (new UIDs, DERIVED, DCM 113102 recorded). Every other series is copied
    unchanged, so DST is the whole dataset; files that are not *.dcm (reports, DICOMDIR) are not
    copied. A head series whose fit fails its own quality check is quarantined whole with the
    reason, never written half-defaced. Look at the QA pictures before the data leaves your hands:
    defacing removes the face, not the ears or the brain's shape, and it can miss.
    """
    settings = load_deid_settings(config or SHIPPED_PROFILE).deface
    quarantine = quarantine or destination.with_name(destination.name + "-quarantine")
    qa_folder = qa_folder or destination.with_name(destination.name + "-deface-qa")
    check_layout(source, destination, quarantine, qa_folder)
    total = len(list(source.rglob("*.dcm")))
    with stage_progress({"read headers": total, "deface": None}, as_json) as advance:
        result = deface_tree(source, destination, quarantine, qa_folder, settings, progress=advance)
    summary = result.as_dict()
    report = report or destination / f"deface-report-{time.strftime('%Y%m%dT%H%M%S')}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    summary |= {"report": str(report), "quarantine": str(quarantine), "qa_folder": str(qa_folder)}
    if as_json:
        print_json(summary)
        return
    table = Table("series", "outcome", "why", "QA picture")
    for line in summary["results"]:
        table.add_row(line["series"][-16:], line["outcome"], escape(line["why"]), line["qa_picture"] or "")
    console.print(table)
    counts = summary["series"]
    console.print(
        escape(
            f"defaced {counts['defaced']} series, left {counts['not_a_head']} unchanged, quarantined "
            f"{counts['quarantined']} (in {quarantine}); QA pictures in {qa_folder}; report: {report}"
        ),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``deface`` to ``insite site``."""
    app.command()(deface)
