"""The work on one source file, apart from the run's bookkeeping, so it can run in a worker process.

:class:`FileJob` reads, checks and de-identifies one file and stages its encoding in the run's
staging folder; it returns a :class:`Prepared` that the run commits in input order
(:mod:`siteprep.deid.run`): moving the staged file to its place, counting, quarantining. A job
writes only to the staging folder (and makes its output's folder), and the site key it is
given decides pseudonyms
(the run's own key, or in a worker a :class:`~siteprep.deid.keys.BorrowedKey`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import MediaStorageDirectoryStorage

from siteprep.deid.dicomdir import referenced_files
from siteprep.deid.elements import peek
from siteprep.deid.engine import SafePrivateKey, deidentify_dataset
from siteprep.deid.headerless import was_bare
from siteprep.deid.identifiers import collect_identifiers
from siteprep.deid.keys import SiteKey
from siteprep.deid.parsing import parse_warnings_are_unsafe, read_strictly
from siteprep.deid.pixels import blank_outside_ultrasound_regions, check_burned_in_risk
from siteprep.deid.profile import Profile
from siteprep.deid.reasons import Reason, Unsafe
from siteprep.deid.settings import DeidSettings
from siteprep.deid.text_redaction import redact_burned_in_text, redaction_applies
from siteprep.deid.writing import encode_file

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What one file's job found or made, for the run to commit (picklable: it leaves workers)."""

    unsafe: tuple[Reason, str] | None = None  # quarantine it, for this reason and detail
    dicomdir: tuple[set[str], set[str]] | None = None  # a source DICOMDIR: identifiers, indexed files
    target: Path | None = None  # where its de-identified version goes
    staged: Path | None = None  # that version, encoded (None in a dry run)
    identifiers: set[str] = field(default_factory=set)
    bare: bool = False  # read without preamble/file meta (siteprep.deid.headerless); its meta is rebuilt
    subject: str = ""
    actions: Counter = field(default_factory=Counter)


def member(path: Path) -> str:
    """A file's identity for matching DICOMDIR file IDs: media file systems ignore case."""
    return str(path.resolve()).lower()


class FileJob:
    """De-identify single files with one run's settings, staging each output under ``staging``."""

    def __init__(self, settings: DeidSettings, destination: Path, staging: Path, dry_run: bool, key: SiteKey) -> None:
        self.settings = settings
        self.destination, self.staging = destination, staging
        self.dry_run = dry_run
        self.key = key
        self.profile = Profile(settings.options)
        self.safe_private = frozenset(SafePrivateKey(e.group, e.creator, e.element) for e in settings.safe_private)
        self.folders: set[Path] = set()  # output folders this job made (mkdir of an existing one is costly)

    def run(self, index: int, path: Path) -> Prepared:
        """The job for the ``index``-th source file; any failure is a reason to quarantine it."""
        try:
            return self._deidentify(index, path)
        except Unsafe as unsafe:
            return Prepared(unsafe=(unsafe.reason, unsafe.detail))
        except Exception as error:  # fail closed: a file that breaks the de-identifier is not written
            log.exception("de-identifying %s failed", path)
            return Prepared(unsafe=(Reason.DEID_FAILED, f"{type(error).__name__}: {error}"[:200]))

    def _deidentify(self, index: int, path: Path) -> Prepared:
        with parse_warnings_are_unsafe():
            dataset = read_strictly(path)
            if peek(dataset.file_meta, "MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
                # a source DICOMDIR is rebuilt after the run, never copied
                return Prepared(
                    dicomdir=(
                        collect_identifiers(dataset, self.profile),
                        {member(path.parent.joinpath(*file_id)) for file_id in referenced_files(dataset)},
                    )
                )
            if not peek(dataset, "SOPInstanceUID") or not peek(dataset, "SOPClassUID"):
                raise Unsafe(Reason.MISSING_SOP_INSTANCE, "no SOPClassUID/SOPInstanceUID")
            clean_pixels = self._clean_pixels(dataset)
            outcome = deidentify_dataset(dataset, self.profile, self.key, self.safe_private, clean_pixels)
        target = (
            self.destination
            / outcome.subject
            / str(peek(dataset, "StudyInstanceUID", "no-study"))
            / str(peek(dataset, "SeriesInstanceUID", "no-series"))
            / f"{peek(dataset, 'SOPInstanceUID')}.dcm"
        )
        staged = None if self.dry_run else self._stage(dataset, index, target.parent)
        return Prepared(
            target=target,
            staged=staged,
            identifiers=outcome.identifiers,
            bare=was_bare(dataset),
            subject=outcome.subject,
            actions=outcome.actions,
        )

    def _clean_pixels(self, dataset: Dataset) -> bool:
        """Whether the object's pixels were cleaned (Clean Pixel Data); :class:`Unsafe` if it must stay out.

        The pixel check decides what needs cleaning; OCR redaction, where the site enables it,
        cleans what the check would quarantine, and the US band too. The deny-list is read here,
        before the header is de-identified.
        """
        rules = self.settings.pixels
        try:
            needs_cleaning = check_burned_in_risk(dataset, rules)
        except Unsafe as risk:
            if not redaction_applies(dataset, risk.reason, rules.burned_in_text):
                raise
            needs_cleaning = True
        if not needs_cleaning:
            return False
        if rules.burned_in_text.enabled:
            redact_burned_in_text(dataset, rules.burned_in_text, collect_identifiers(dataset, self.profile))
        else:
            blank_outside_ultrasound_regions(dataset)
        return True

    def _stage(self, dataset: Dataset, index: int, folder: Path) -> Path:
        """The encoded file under a name of its own (``.tmp``: never taken for an output).

        Its output ``folder`` is made here too: making folders is a large part of the file
        system's work, and jobs may run in parallel where the run's commits do not.
        """
        staged = self.staging / f"{index}.tmp"
        try:
            if folder not in self.folders:
                folder.mkdir(parents=True, exist_ok=True)
                self.folders.add(folder)
            staged.write_bytes(encode_file(dataset))
        except Exception as error:  # never leave a half-written file behind
            staged.unlink(missing_ok=True)
            raise Unsafe(Reason.WRITE_FAILED, f"{type(error).__name__}: {error}"[:200]) from None
        return staged
