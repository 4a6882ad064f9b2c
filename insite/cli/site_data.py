"""``insite site deid | scan | ingest | check``: prepare a site's data, at the site.

Argument handling and presentation only; the work is in :mod:`siteprep.deid`, :mod:`siteprep.ingest`
and :mod:`siteprep.qa`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from common.errors import ConfigError, SiteDataError
from insite.cli.passphrase import PassphraseFileOption, current_passphrase, new_passphrase, run_passphrase
from insite.cli.terminal import check_failed, console, err_console
from siteprep.deid.burned_in_text import TESSERACT_HINT, tesseract_path
from siteprep.deid.keys import SiteKey
from siteprep.deid.passphrase import configured_passphrase
from siteprep.deid.profile import Profile
from siteprep.deid.run import deidentify_tree, source_files
from siteprep.deid.scan import output_files, scan_tree
from siteprep.deid.settings import (
    SITE_KEY_FILE,
    DeidSettings,
    check_site_name,
    site_deid_settings,
    site_settings_file,
    write_site_settings,
)
from siteprep.ingest import ingest as ingest_series
from siteprep.qa import check_site_data

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="the site's de-identification settings (TOML, "
    "\\[deid] table; 'insite site init' writes one); default: the shipped "
    "PS3.15 profile, with --key-file",
)
KeyFileOption = typer.Option(
    None,
    "--key-file",
    help="the site's pseudonymisation key, encrypted (made 0600 on "
    "first use; keep it outside the output folder); overrides key_file of --config",
)
JsonOption = typer.Option(False, "--json", help="print a machine-readable JSON summary instead of tables")
DryRunOption = typer.Option(False, "--dry-run", help="report what would happen; write nothing")


@contextmanager
def stage_progress(totals: Mapping[str, int | None], quiet: bool) -> Iterator[Callable[[str], None]]:
    """A per-stage progress bar; ``advance(stage)`` moves that stage's bar by one."""
    with Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    ) as bars:
        tasks = {stage: bars.add_task(stage, total=total) for stage, total in totals.items()}
        yield lambda stage: bars.advance(tasks[stage])


def print_json(data: dict) -> None:
    print(json.dumps(data, indent=1, default=str))


def _scan_table(scan: dict) -> None:
    verdict = (
        "[green]no original identifier found[/]"
        if scan["files_with_residuals"] == 0
        else f"[bold red]{scan['files_with_residuals']} file(s) still hold an original identifier[/]"
    )
    console.print(
        f"residual-identifier scan: {scan['files_scanned']} files, "
        f"{scan['identifiers_searched']} identifying values searched: {verdict}"
    )
    for finding in scan["findings"][:20]:
        console.print(f"  {finding['file']}: {finding['where']} ({finding['identifier']})", highlight=False)


def deid(
    source: Path = typer.Argument(..., help="folder of raw DICOM files (any depth)"),
    destination: Path = typer.Argument(..., help="output folder for de-identified files"),
    config: Path = ConfigOption,
    key_file: Path = KeyFileOption,
    quarantine: Path = typer.Option(None, help="where refused files go (default: DST-quarantine beside DST)"),
    report: Path = typer.Option(None, help="audit report JSON (default: DST/deid-audit-<time>.json)"),
    as_json: bool = JsonOption,
    dry_run: bool = DryRunOption,
    passphrase_file: Path = PassphraseFileOption,
) -> None:
    """De-identify SRC into DST (DICOM PS3.15 Annex E profile); quarantine what is unsafe.

    The site's key file is opened with its passphrase (a plaintext one is refused: 'insite site key
    encrypt' migrates it); a new one is made for the site named in --config.
    """
    settings = site_deid_settings(config, key_file)
    if settings.pixels.burned_in_text.enabled and tesseract_path() is None:
        err_console.print(
            "[yellow]warning: burned-in text redaction is on, but tesseract is not installed: the objects it "
            f"would clean stay quarantined (ocr_unavailable); {escape(TESSERACT_HINT)}[/]"
        )
    quarantine = quarantine or destination.with_name(destination.name + "-quarantine")
    total = len(source_files(source))
    passphrase = run_passphrase(settings, passphrase_file, dry_run)
    stages: dict[str, int | None] = {"deid": total, "scan": total}
    if settings.deface.enabled and not dry_run:
        stages["deface"] = None  # series, counted as they are found
    with stage_progress(stages, as_json) as advance:
        result = deidentify_tree(
            settings, source, destination, quarantine, dry_run=dry_run, progress=advance, passphrase=passphrase
        )
    summary = result.as_dict()
    if not dry_run:
        report = report or destination / f"deid-audit-{time.strftime('%Y%m%dT%H%M%S')}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        summary["report"] = str(report)
        summary["quarantine"] = str(quarantine)
    if as_json:
        print_json(summary)
        return
    files = summary["files"]
    console.print(
        f"{'would write' if dry_run else 'written'} {files['written']} of {files['in']} files "
        f"for {summary['subjects']} subject(s); quarantined {files['quarantined']}"
        f"{'' if dry_run else f' (in {quarantine})'}; {summary['files_per_second']} files/s"
    )
    if files["bare_data_sets"]:
        console.print(
            f"{files['bare_data_sets']} file(s) had no preamble/file meta (an older archive's bare data set): "
            "read in the one encoding that parses them completely, file meta rebuilt"
        )
    if files["duplicates"]:
        console.print(
            f"[yellow]{files['duplicates']} file(s) repeated a SOP instance already written; "
            "the later copy replaced the earlier one[/]"
        )
    if summary["quarantined_by_reason"]:
        table = Table("quarantine reason", "files")
        for reason, count in summary["quarantined_by_reason"].items():
            table.add_row(reason, str(count))
        console.print(table)
    console.print(f"profile: PS3.15 E.1-1 2024b, DCM codes {', '.join(summary['profile']['method_codes'])}")
    if summary["deface"]:
        counts = summary["deface"]["series"]
        console.print(
            f"defacing: {counts['defaced']} head series defaced, {counts['quarantined']} quarantined "
            f"(QA pictures in {destination.name}-deface-qa beside the output)",
            highlight=False,
        )
    if summary["residual_scan"]:
        _scan_table(summary["residual_scan"])
    if not dry_run:
        console.print(f"audit report: {report}")


def scan(
    destination: Path = typer.Argument(..., help="de-identified folder to check"),
    original: Path = typer.Option(..., "--original", help="the raw folder it was made from"),
    config: Path = ConfigOption,
    key_file: Path = KeyFileOption,
    as_json: bool = JsonOption,
    passphrase_file: Path = PassphraseFileOption,
) -> None:
    """Prove that no identifying value of ORIGINAL remains anywhere in DST (exit 1 if one does)."""
    settings = site_deid_settings(config, key_file)
    key = _read_only_key(settings, passphrase_file)
    if key is None and not as_json:
        console.print(
            f"[yellow]no key file {settings.key_file}: dates are searched tree-wide and may match by chance[/]"
        )
    totals = {"read originals": len(source_files(original)), "scan output": len(output_files(destination))}
    with stage_progress(totals, as_json) as advance:
        result = scan_tree(destination, original, Profile(settings.options), key, advance).as_dict()
    if as_json:
        print_json(result)
    else:
        _scan_table(result)
        console.print(
            f"{result['identifiers_set_aside_as_ambiguous']} identifying value(s) set aside: "
            "they also occur as retained words in the originals"
        )
    if result["files_with_residuals"]:
        raise check_failed(
            f"scan: {result['files_with_residuals']} file(s) in {destination} hold an original identifier"
        )


def ingest(
    source: Path = typer.Argument(..., help="de-identified DICOM folder (output of `insite site deid`)"),
    data_path: Path = typer.Argument(..., help="training folder to write (images/, labels/, cases.json)"),
    labels: Path = typer.Option(
        None,
        help="folder of label volumes named <SeriesInstanceUID>.nii.gz "
        "(the de-identified UID, or the original one together with --config)",
    ),
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="the site's de-identification settings: its "
        "key maps label files named by the ORIGINAL SeriesInstanceUID (as "
        "annotated before de-identification) to the de-identified series",
    ),
    val_fraction: float = typer.Option(
        0.2, min=0.0, max=0.99, help="share of cases held out for validation (Dice is reported on them), spread evenly"
    ),
    key_file: Path = typer.Option(
        None, "--key-file", help="the site's pseudonymisation key itself, instead of --config"
    ),
    as_json: bool = JsonOption,
    dry_run: bool = DryRunOption,
    passphrase_file: Path = PassphraseFileOption,
) -> None:
    """Turn de-identified series (+ DICOM-SEG or label volumes) into training cases."""
    key = _label_key(config, key_file, passphrase_file) if config or key_file else None
    total = len(list(source.rglob("*.dcm"))) if source.is_dir() else 0
    with stage_progress({"read headers": total, "convert": None}, as_json) as advance:
        result = ingest_series(
            source, data_path, labels, dry_run=dry_run, progress=advance, val_fraction=val_fraction, key=key
        ).as_dict()
    if as_json:
        print_json(result)
        return
    console.print(
        f"{'would write' if dry_run else 'wrote'} {result['cases']} case(s) "
        f"({result['train']} train, {result['val']} val) to {data_path}"
    )
    for uid, reason in result["skipped"].items():
        console.print(f"  skipped series {uid}: {reason}", highlight=False)
    if result["missing_labels"]:
        console.print(f"  {len(result['missing_labels'])} series without a label (not ingested)")
        if labels and not (config or key_file):
            console.print(
                "  label files named by the original SeriesInstanceUID are matched only with "
                "--config or --key-file (the site's de-identification key)"
            )


def _label_key(config: Path | None, key_file: Path | None, passphrase_file: Path | None) -> SiteKey:
    """The site's key, for mapping original series UIDs in label file names."""
    settings = site_deid_settings(config, key_file)
    key = _read_only_key(settings, passphrase_file)
    if key is None:
        raise SiteDataError(
            f"ingest: key file {settings.key_file} (from {config or '--key-file'}) does not "
            "exist; it is created by `insite site deid`"
        )
    return key


def _read_only_key(settings: DeidSettings, passphrase_file: Path | None) -> SiteKey | None:
    """The site's key without taking its lock or creating it: look-ups only, never new patients."""
    if settings.key_file is None or not settings.key_file.is_file():
        return None
    passphrase = current_passphrase(settings, passphrase_file)
    return SiteKey(settings.key_file, settings.subject_prefix, persist=False, passphrase=passphrase, site=settings.site)


def init(
    site: str = typer.Option(
        ...,
        "--site",
        help="this site's name, as the coordinator registered it; the key file's authenticated "
        "header names it, so a key file of another site is refused",
    ),
    directory: Path = typer.Option(Path("."), "--dir", help="the site's folder for its settings and key"),
    passphrase_file: Path = PassphraseFileOption,
) -> None:
    """Write this site's de-identification settings (deid.toml) and make its encrypted key file.

    The key file (deid-key.enc, beside deid.toml, 0600) maps pseudonyms back to patients and never
    leaves the site; it is encrypted under a passphrase, asked twice here, that the site keeps
    apart from it. Then: 'insite site deid RAW OUT --config deid.toml'.
    """
    folder = directory.resolve()
    site_settings_file(folder)  # refused before anything is asked if it exists
    check_site_name(site)
    key_file = folder / SITE_KEY_FILE
    if key_file.exists():
        raise ConfigError(
            f"{key_file}: a key file is there already; name it in a deid.toml of your own, or choose another folder"
        )
    passphrase = new_passphrase(
        f"site {site}'s key file {key_file}", configured_passphrase(DeidSettings(), passphrase_file)
    )
    SiteKey(key_file, DeidSettings().subject_prefix, passphrase=passphrase, site=site).close()
    config = write_site_settings(folder, site)
    console.print(
        escape(
            f"wrote {config} for site {site} and its encrypted key file {key_file} (passphrase from "
            f"{passphrase.source}: keep it apart from the key; back the key up with 'insite site key backup');\n"
            f"next: insite site deid RAW OUT --config {config}"
        ),
        highlight=False,
    )


def check(
    data_path: Path = typer.Argument(..., help="training folder (images/, labels/, cases.json)"),
    min_cases: int = typer.Option(2, help="fewer cases than this is an error"),
    as_json: bool = JsonOption,
) -> None:
    """QA of a training folder: spacing, orientation, shapes, labels, duplicates, counts (exit 1 on a problem)."""
    result = check_site_data(data_path, min_cases)
    if as_json:
        print_json(result.as_dict())
    else:
        table = Table("case", "split", "shape", "spacing (mm)", "orientation", "label values")
        for case in result.cases:
            table.add_row(
                case.case_id,
                case.split,
                "x".join(map(str, case.shape)),
                " ".join(f"{s:g}" for s in case.spacing),
                case.orientation,
                ",".join(map(str, case.label_values)),
            )
        console.print(table)
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for error in result.errors:
            console.print(f"[red]problem:[/] {error}", highlight=False)
    if not result.ok:
        raise check_failed(f"check: {data_path} has {len(result.errors)} problem(s)")


def register(app: typer.Typer) -> None:
    """Add the data commands to ``insite site``."""
    app.command()(init)
    app.command()(deid)
    app.command()(scan)
    app.command()(ingest)
    app.command()(check)
