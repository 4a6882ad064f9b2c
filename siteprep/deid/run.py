"""De-identify a tree: every file is either written de-identified or quarantined with a reason.

``SRC`` is walked to any depth and every regular file is tried (DICOM files need no extension;
anything that is not DICOM is quarantined as ``not_dicom``). Output goes to
``DST/<subject>/<study UID>/<series UID>/<SOP instance UID>.dcm``: no source path or file name,
which may hold a name or a medical record number, reaches ``DST``. The quarantine folder (outside
``DST``; it holds originals) gets each refused file under a hash name with a ``.reason.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from siteprep.deface.outcome import Outcome
from siteprep.deface.tree import Defacer, read_series
from siteprep.deid.dicomdir import rebuild_dicomdir
from siteprep.deid.errors import DeidError
from siteprep.deid.job import Prepared, member
from siteprep.deid.keyfile import Passphrase
from siteprep.deid.keys import open_site_key
from siteprep.deid.pool import JobSpec, run_in_workers, worker_count
from siteprep.deid.profile import Profile
from siteprep.deid.reasons import Reason, Unsafe
from siteprep.deid.scan import ScanReport, index_search, scan_files
from siteprep.deid.settings import DeidSettings
from siteprep.folders import layout_problem, private_folder

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """The audit of one run: counts only, no identifying value and no source path."""

    dry_run: bool
    profile: dict
    files_in: int = 0
    written: int = 0
    duplicates: int = 0
    bare_data_sets: int = 0  # written from files without preamble/file meta (siteprep.deid.headerless)
    subjects: set[str] = field(default_factory=set)
    quarantined: Counter = field(default_factory=Counter)
    actions: dict[str, Counter] = field(default_factory=dict)
    seconds: float = 0.0
    residual_scan: ScanReport | None = None
    source_dicomdirs: int = 0
    dicomdir_rebuilt: bool = False
    dicomdir_not_indexed: int = 0
    deface: dict | None = None  # the defacing pass's report, when [deid.deface] enabled it

    def as_dict(self) -> dict:
        return {
            "tool": "insite site deid",
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dry_run": self.dry_run,
            "profile": self.profile,
            "files": {
                "in": self.files_in,
                "written": self.written,
                "duplicates": self.duplicates,
                "bare_data_sets": self.bare_data_sets,
                "quarantined": sum(self.quarantined.values()),
            },
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
            "subjects": len(self.subjects),
            "actions_per_attribute": {k: dict(sorted(v.items())) for k, v in sorted(self.actions.items())},
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.files_in / self.seconds, 1) if self.seconds else None,
            "residual_scan": self.residual_scan.as_dict() if self.residual_scan else None,
            "notes": _dicomdir_notes_for(self),
            "deface": self.deface,
        }


def _dicomdir_notes_for(report: RunReport) -> list[str]:
    if not report.source_dicomdirs:
        return []
    if not report.dicomdir_rebuilt:
        return ["source DICOMDIR dropped: none of the files it indexed was written"]
    return [
        "source DICOMDIR replaced by a rebuilt one"
        + (f" ({report.dicomdir_not_indexed} written files not indexed)" if report.dicomdir_not_indexed else "")
    ]


def _profile_summary(settings: DeidSettings, profile: Profile) -> dict:
    return {
        "table": "DICOM PS3.15 2024b Annex E Table E.1-1",
        "options": settings.options.model_dump(),
        "method_codes": [code for code, _ in profile.method_codes()],
        "safe_private": [entry.model_dump() for entry in settings.safe_private],
        "pixels": settings.pixels.model_dump(),
    }


def source_files(source: Path) -> list[Path]:
    if not source.is_dir():
        raise DeidError(f"source folder {source} does not exist")
    return sorted(p for p in source.rglob("*") if p.is_file())


def _check_layout(source: Path, destination: Path, quarantine: Path, key_file: Path) -> None:
    kept_out = (("key file", key_file), ("quarantine folder", quarantine))
    if problem := layout_problem(source, destination, kept_out, "it must stay outside"):
        raise DeidError(problem)


class _Runner:
    """One run's bookkeeping: commits each file's :class:`Prepared` in input order."""

    def __init__(
        self,
        settings: DeidSettings,
        source: Path,
        destination: Path,
        quarantine: Path,
        dry_run: bool,
        passphrase: Passphrase | None,
    ) -> None:
        self.settings = settings
        self.source, self.destination, self.quarantine = source, destination, quarantine
        self.dry_run = dry_run
        self.profile = Profile(settings.options)
        self.key = open_site_key(settings, persist=not dry_run, passphrase=passphrase)
        self.report = RunReport(dry_run, _profile_summary(settings, self.profile))
        self.outputs: dict[Path, set[str]] = {}  # written file -> its original's identifiers
        self.dicomdir_identifiers: set[str] = set()  # what the source DICOMDIRs' records held
        self.dicomdir_members: set[str] = set()  # files the source DICOMDIRs index (see member)
        self.written_from: dict[Path, Path] = {}  # source file -> its written file

    def run(self, files: list[Path], progress: Callable[[str], None] | None) -> None:
        """Every file's job, in worker processes when the run is large enough (see worker_count)."""

        def commit(path: Path, prepared: Prepared) -> None:
            self.commit(path, prepared)
            if progress:
                progress("deid")

        workers = worker_count(self.settings.workers, len(files))
        with _staging_folder(self.destination, self.dry_run) as staging:
            spec = JobSpec(self.settings, self.destination, staging, self.dry_run)
            if workers > 1:
                run_in_workers(files, workers, spec, self.key, commit)
                return
            job = spec.job(self.key)
            for index, path in enumerate(files):
                commit(path, job.run(index, path))

    def deface_into(self, destination: Path, progress: Callable[[str], None] | None) -> None:
        """Deface the head series written so far (in a pending folder) while moving all of it into ``destination``.

        Series the defacer quarantines go to ``QUARANTINE/deface/`` and leave the written count;
        QA pictures go beside ``destination`` (``DST-deface-qa``): they show faces.
        """
        qa_folder = destination.with_name(destination.name + "-deface-qa")
        defacer = Defacer(
            self.destination, destination, self.quarantine / "deface", qa_folder, self.settings.deface, move=True
        )
        defacer.run(*read_series(self.destination), (lambda: progress("deface")) if progress else None)
        placed = defacer.report.placed
        self.outputs = {placed[path]: found for path, found in self.outputs.items() if path in placed}
        self.written_from = {source: placed[path] for source, path in self.written_from.items() if path in placed}
        self.report.written -= sum(r.files for r in defacer.report.series if r.outcome is Outcome.QUARANTINED)
        self.report.deface = defacer.report.as_dict()

    def commit(self, path: Path, prepared: Prepared) -> None:
        self.report.files_in += 1
        if prepared.unsafe is not None:
            self._quarantine(path, Unsafe(*prepared.unsafe))
            return
        if prepared.dicomdir is not None:
            self.report.source_dicomdirs += 1
            self.dicomdir_identifiers |= prepared.dicomdir[0]
            self.dicomdir_members |= prepared.dicomdir[1]
            return
        target = prepared.target
        assert target is not None  # a job gives every file it neither quarantines nor reads as a DICOMDIR one
        if prepared.staged is not None:
            try:
                self._place(prepared.staged, target)
            except Unsafe as unsafe:
                self._quarantine(path, unsafe)
                return
        self._count_written(path, target, prepared)

    def _count_written(self, path: Path, target: Path, prepared: Prepared) -> None:
        actions = self.report.actions
        for (keyword, action), count in prepared.actions.items():
            if keyword not in actions:
                actions[keyword] = Counter()
            actions[keyword][action] += count
        self.report.subjects.add(prepared.subject)
        self.written_from[path] = target
        if target in self.outputs:
            self.report.duplicates += 1
        self.outputs.setdefault(target, set()).update(prepared.identifiers)
        self.report.written += 1
        self.report.bare_data_sets += prepared.bare

    def _place(self, staged: Path, target: Path) -> None:
        """Move a staged file to its place (atomic: staging is inside the output folder).

        The job made the folder; should it have gone since, it is made again.
        """
        try:
            try:
                os.replace(staged, target)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
        except Exception as error:  # never leave a half-written file in DST
            staged.unlink(missing_ok=True)
            raise Unsafe(Reason.WRITE_FAILED, f"{type(error).__name__}: {error}"[:200]) from None

    def _quarantine(self, path: Path, unsafe: Unsafe) -> None:
        self.report.quarantined[unsafe.reason.value] += 1
        log.info("quarantined %s: %s", path, unsafe)
        if self.dry_run:
            return
        self.quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = hashlib.sha256(str(path.relative_to(self.source)).encode()).hexdigest()[:20]
        shutil.copyfile(path, self.quarantine / f"{name}.dcm")
        (self.quarantine / f"{name}.reason.json").write_text(
            json.dumps(
                {"source": str(path.relative_to(self.source)), "reason": unsafe.reason.value, "detail": unsafe.detail},
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )


def _pending_folder(destination: Path) -> AbstractContextManager[Path]:
    """Where the run writes when it defaces: beside ``destination``, so no undefaced head ever lands in it."""
    return private_folder(destination.parent, f".{destination.name}.pending-deface-")


@contextmanager
def _staging_folder(destination: Path, dry_run: bool) -> Iterator[Path]:
    """A private folder inside ``destination`` for encoded files until they are placed.

    Inside, so that placing a file is an atomic rename; removed with whatever was not placed, and
    ``destination`` too if the run made it and placed nothing there.
    """
    if dry_run:
        yield destination  # nothing is staged in a dry run
        return
    made = not destination.exists()
    try:
        with private_folder(destination, ".staging-") as staging:
            yield staging
    finally:
        if made and destination.exists() and not any(destination.iterdir()):
            destination.rmdir()


def deidentify_tree(
    settings: DeidSettings,
    source: Path,
    destination: Path,
    quarantine: Path,
    dry_run: bool = False,
    scan: bool = True,
    progress: Callable[[str], None] | None = None,
    passphrase: Passphrase | None = None,
) -> RunReport:
    """De-identify every file under ``source`` into ``destination``; return the audit report.

    ``progress`` is called once per file with the stage name ("deid" or "scan"), and once per series
    with "deface" when ``[deid.deface] enabled`` asks for the defacing pass (:meth:`_Runner.deface_into`). With ``scan``
    the files written by this run are searched for every identifying value this run read.
    ``passphrase`` unlocks (or makes) the site's key file; without it, the configured sources
    are tried (:mod:`siteprep.deid.passphrase`). Worker processes get the key in memory only.
    """
    if settings.key_file is None:
        raise DeidError("the de-identification settings name no key file (key_file, or --key-file)")
    _check_layout(source, destination, quarantine, settings.key_file)
    files = source_files(source)
    defacing = settings.deface.enabled and not dry_run
    started = time.perf_counter()
    with _pending_folder(destination) if defacing else nullcontext(destination) as output:
        runner = _Runner(settings, source, output, quarantine, dry_run, passphrase)
        try:
            runner.run(files, progress)
        finally:
            runner.key.close()
        if defacing:
            runner.deface_into(destination, progress)
    searches = sorted(runner.outputs.items())
    if runner.report.source_dicomdirs and not dry_run and runner.outputs:
        searches += _rebuild_dicomdir(runner, destination)
    runner.report.seconds = time.perf_counter() - started
    if scan and not dry_run:
        runner.report.residual_scan = scan_files(
            destination, searches, (lambda: progress("scan")) if progress else None
        )
    return runner.report


def _rebuild_dicomdir(runner: _Runner, destination: Path) -> list[tuple[Path, set[str]]]:
    """Index the written versions of the files the source DICOMDIRs indexed (their file-sets).

    Other written files were not on the source's index either, and indexing costs FileSet a
    header rewrite per file, so they stay out. Returns what the scan must search in the index and
    its files.

    The new DICOMDIR is searched for every identifier of the run (its records come from every
    written file) and of the source DICOMDIRs, see :func:`siteprep.deid.scan.index_search`.
    """
    # resolving every source path costs syscalls per file: done here, when a DICOMDIR needs it
    written_from = {member(source): target for source, target in runner.written_from.items()}
    indexed = sorted({written_from[m] for m in runner.dicomdir_members if m in written_from})
    if not indexed:
        return []
    rebuilt = rebuild_dicomdir(destination, indexed)
    runner.report.dicomdir_rebuilt = True
    runner.report.dicomdir_not_indexed = rebuilt.not_indexed + len(runner.outputs) - len(indexed)
    everything = set(runner.dicomdir_identifiers).union(*runner.outputs.values())
    return [
        (rebuilt.path, index_search(rebuilt.path, everything, runner.profile)),
        *((member, runner.outputs[written]) for member, written in sorted(rebuilt.instances.items())),
    ]
