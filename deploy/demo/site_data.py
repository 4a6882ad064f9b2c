"""The demo's sites prepare their data the way a hospital does: raw DICOM export -> de-identify ->
ingest -> check, with the same code as ``insite site deid | ingest | check``.

Each synthetic site starts from a PACS-style export full of planted identifiers
(:func:`deploy.demo.synthetic_sites.write_site_dicom`), de-identifies it with the shipped profile
(``configs/deid.toml``) under an encrypted key file of its own kept beside, never inside, the
output, turns the de-identified series and their DICOM-SEGs into training cases and checks them.
The sites work in parallel processes, as three hospitals would, and report progress to the caller
through a queue. A site's folder ends up as::

    pacs-export/       the raw export (synthetic identifiers; a real site keeps this in its PACS)
    deid.toml          the site's de-identification settings (the shipped profile, the site's
                       name, and passphrase_file naming deid-passphrase)
    deid-key.enc       the site's pseudonymisation secret and honest-broker key, encrypted (0600)
    deid-passphrase    the key's passphrase, random, 0600: a demo convenience, so that 'insite site
                       scan|reidentify --config deid.toml' work unattended; a real site keeps its
                       passphrase apart from the key (a safe, a secrets store), never beside it
    deid/              de-identified DICOM + the audit report deid-audit.json
    deid-quarantine/   anything refused, with a reason per file
    data/              training cases (cases.json, images/, labels/)
"""

from __future__ import annotations

import json
import queue
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from common.errors import SiteDataError
from common.files import write_secret
from deploy.demo.site_processes import run_per_site
from deploy.demo.synthetic_sites import ScannerProfile, write_site_dicom
from siteprep.deid.keyfile import Passphrase
from siteprep.deid.passphrase import read_passphrase_file
from siteprep.deid.run import deidentify_tree, source_files
from siteprep.deid.settings import load_deid_settings, write_site_settings
from siteprep.ingest import ingest
from siteprep.qa import check_site_data

PASSPHRASE_FILE = "deid-passphrase"  # the demo's; a real site keeps its passphrase apart from the key

# One progress event: (site, stage label, stage total) starts a stage; (site, None, 0) is one step.
ProgressEvent = tuple[str, str | None, int]


@dataclass(frozen=True)
class PreparedSite:
    """What one site's preparation did, in counts; nothing identifying."""

    site: str
    patients: int
    exported: int
    written: int
    quarantined: int
    files_with_residuals: int
    train: int
    val: int
    warnings: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{self.site}: {self.exported} raw DICOM files of {self.patients} patients -> "
            f"{self.written} de-identified, {self.quarantined} quarantined, "
            f"{self.files_with_residuals} holding an original identifier (residual scan) -> "
            f"{self.train + self.val} cases ({self.train} train, {self.val} val)"
        )


class _Stages:
    """Turns the library's per-file ``progress(stage)`` calls into queue events, one bar per site."""

    def __init__(self, site: str, events: queue.Queue, labels: dict[str, tuple[str, int | None]]) -> None:
        self.site, self.events, self.labels = site, events, labels
        self.current: str | None = None

    def start(self, label: str, total: int | None) -> None:
        self.events.put((self.site, label, total or 0))

    def __call__(self, stage: str = "") -> None:
        if stage != self.current:
            self.current = stage
            self.start(*self.labels[stage])
        self.events.put((self.site, None, 0))


def prepare_site(
    profile: ScannerProfile, site_dir: Path, cases: int, val_fraction: float, size: int, seed: int, events: queue.Queue
) -> PreparedSite:
    """Export, de-identify, ingest and check one site's data; raises SiteDataError naming the site.

    What an earlier preparation left in the site's folders is replaced; its key file, settings and
    passphrase file are kept, so the same made-up patients get the same pseudonyms again.
    """
    export, deid_dir = site_dir / "pacs-export", site_dir / "deid"
    for derived in (export, deid_dir, site_dir / "deid-quarantine", site_dir / "data"):
        shutil.rmtree(derived, ignore_errors=True)  # a re-run starts clean; the key file stays
    patients = write_site_dicom(
        profile,
        export,
        cases,
        size,
        seed,
        progress=_Stages(profile.name, events, {"": ("write raw DICOM export", cases)}),
    )
    files = len(source_files(export))
    config = site_dir / "deid.toml"
    if not config.exists():
        write_site_settings(site_dir, profile.name, passphrase_file=PASSPHRASE_FILE)
    # The sites already run in parallel, one process each: a worker pool per site would oversubscribe.
    settings = load_deid_settings(config).model_copy(update={"workers": 1})
    run = deidentify_tree(
        settings,
        export,
        deid_dir,
        site_dir / "deid-quarantine",
        progress=_Stages(profile.name, events, {"deid": ("de-identify", files), "scan": ("residual scan", files)}),
        passphrase=_demo_passphrase(site_dir / PASSPHRASE_FILE),  # its own, whatever INSITE_DEID_PASSPHRASE says
    )
    audit = run.as_dict()
    deid_dir.mkdir(parents=True, exist_ok=True)
    (deid_dir / "deid-audit.json").write_text(json.dumps(audit, indent=1) + "\n", encoding="utf-8")
    _refuse_unclean(profile.name, audit, site_dir / "deid-quarantine")
    ingested = ingest(
        deid_dir,
        site_dir / "data",
        val_fraction=val_fraction,
        progress=_Stages(
            profile.name,
            events,
            {
                "read headers": ("ingest: read headers", audit["files"]["written"]),
                "convert": ("ingest: build volumes", cases),
            },
        ),
    )
    problems = [
        *(f"series {uid} skipped: {why}" for uid, why in ingested.skipped.items()),
        *(f"series {uid} has no label" for uid in ingested.missing_labels),
    ]
    qa = check_site_data(site_dir / "data", min_cases=2, site=profile.name) if ingested.cases else None
    if problems or qa is None or not qa.ok:
        problems += qa.errors if qa else ["no case was ingested"]
        raise SiteDataError(f"site {profile.name}: ingest failed: {'; '.join(problems)}")
    counts = ingested.as_dict()
    return PreparedSite(
        profile.name,
        len(patients),
        files,
        audit["files"]["written"],
        audit["files"]["quarantined"],
        audit["residual_scan"]["files_with_residuals"],
        counts["train"],
        counts["val"],
        tuple(qa.warnings),
    )


def _demo_passphrase(path: Path) -> Passphrase:
    """The demo site's passphrase, made at random on first use and kept in ``path`` (0600)."""
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24).encode() + b"\n")
    return read_passphrase_file(path)


def _refuse_unclean(site: str, audit: dict, quarantine: Path) -> None:
    """The demo's export is well-formed DICOM: a quarantined file or a residual is a defect to show."""
    problems = []
    if audit["files"]["quarantined"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in audit["quarantined_by_reason"].items())
        problems.append(
            f"{audit['files']['quarantined']} of {audit['files']['in']} files quarantined "
            f"({reasons}; a reason per file in {quarantine})"
        )
    if audit["residual_scan"]["files_with_residuals"]:
        problems.append(
            f"{audit['residual_scan']['files_with_residuals']} de-identified file(s) still hold an original identifier"
        )
    if problems:
        raise SiteDataError(f"site {site}: de-identification failed: {'; '.join(problems)}")


def prepare_sites(
    sites: dict[ScannerProfile, Path],
    cases: int,
    val_fraction: float,
    size: int,
    seed: int,
    on_event: Callable[[ProgressEvent], None],
) -> list[PreparedSite]:
    """Prepare every site in its own process; ``on_event`` receives their progress in this process.

    A failing site stops the demo with that site's reason: a federation short of a site's data
    would train on something other than what the demo promises.
    """
    jobs = {
        profile.name: partial(prepare_site, profile, folder, cases, val_fraction, size, seed)
        for profile, folder in sites.items()
    }
    results = run_per_site(jobs, on_event, "data preparation")
    for outcome in results.values():
        if isinstance(outcome, SiteDataError):
            raise outcome
    return list(results.values())
