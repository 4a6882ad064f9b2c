"""Residual-identifier scan: prove that no original identifying value survives in the output.

Independent of the de-identifier's own bookkeeping: the identifying values are collected afresh
from the original files (:func:`siteprep.deid.identifiers.collect_identifiers`, leniently parsed so
that even files the run quarantined contribute) and searched, case-insensitively and as whole
tokens, in every output file twice:

- in the raw bytes up to the pixel data, so undecoded (UN) values, private blocks, the preamble
  and the file meta are covered whatever pydicom makes of them;
- in every decoded value of every element at any depth (strings after character-set decoding,
  bytes as Latin-1), which covers non-ASCII names and anything stored after the pixel data.

Pixel data itself is not searched: burned-in text is the job of :mod:`siteprep.deid.pixels`.
Findings name the output file, where the value was found and the identifier's shape, never the
identifier itself, so the report can be shared with whoever reviews the run.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from siteprep.deid.dicomdir import DICOMDIR_NAME
from siteprep.deid.identifiers import collect_identifiers
from siteprep.deid.keys import SiteKey
from siteprep.deid.pixels import PIXEL_KEYWORDS
from siteprep.deid.profile import Action, Profile
from siteprep.deid.values import TEXT_VRS

log = logging.getLogger(__name__)
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


@dataclass(frozen=True)
class Finding:
    file: str
    where: str  # "raw bytes" or the element path, e.g. "ContentSequence[0].TextValue"
    identifier: str  # the identifier's shape only, e.g. "text of 11 characters"


@dataclass
class ScanReport:
    files_scanned: int = 0
    identifiers: int = 0
    ambiguous: int = 0
    files_with_residuals: int = 0
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self, limit: int = 200) -> dict:
        return {
            "files_scanned": self.files_scanned,
            "identifiers_searched": self.identifiers,
            "identifiers_set_aside_as_ambiguous": self.ambiguous,
            "files_with_residuals": self.files_with_residuals,
            "findings": [vars(f) for f in self.findings[:limit]],
        }


def _shape(identifier: str) -> str:
    kind = (
        "UID"
        if identifier.replace(".", "").isdigit() and "." in identifier
        else ("number" if identifier.isdigit() else "text")
    )
    return f"{kind} of {len(identifier)} characters"


class _Needle:
    """One identifier, matched as a whole token (a UID also may not continue with a dot)."""

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.text = identifier.lower()
        self.raw = {self.text.encode("utf-8")}
        if self.text.isascii() or all(ord(c) < 256 for c in self.text):
            self.raw.add(self.text.encode("latin-1"))
        self.dotted = "." in identifier and identifier.replace(".", "").isdigit()

    def _bounded(self, haystack, start: int, end: int) -> bool:
        for char in (haystack[start - 1 : start], haystack[end : end + 1]):
            if char and (char.isalnum() or (self.dotted and char in (".", b"."))):
                return False
        return True

    def found_in(self, haystack) -> bool:
        for needle in self.raw if isinstance(haystack, bytes) else (self.text,):
            start = haystack.find(needle)
            while start != -1:
                if self._bounded(haystack, start, start + len(needle)):
                    return True
                start = haystack.find(needle, start + 1)
        return False


def needles(identifiers: Iterable[str]) -> list[_Needle]:
    return [_Needle(identifier) for identifier in sorted(set(identifiers))]


def _decoded_values(dataset: Dataset, prefix: str = "") -> Iterable[tuple[str, str]]:
    for element in dataset:
        where = f"{prefix}{element.keyword or element.tag}"
        if element.VR == "SQ":
            for index, item in enumerate(element.value or ()):
                yield from _decoded_values(item, f"{where}[{index}].")
        elif int(element.tag) in PIXEL_TAGS or element.keyword in PIXEL_KEYWORDS:
            continue
        elif isinstance(element.value, (bytes, bytearray)):
            yield where, bytes(element.value).decode("latin-1").lower()
        elif element.value is not None:
            yield where, str(element.value).lower()


def scan_file(path: Path, search: list[_Needle], name: str) -> list[Finding]:
    """Findings for one output file. An output pydicom cannot parse is itself a finding, and then
    all of its bytes are searched."""
    data = path.read_bytes()
    handle = io.BytesIO(data)
    try:
        dcmread(handle, stop_before_pixels=True)
        header = data[: handle.tell()].lower()
        dataset = dcmread(io.BytesIO(data))
    except Exception as error:
        everything = data.lower()
        return [
            Finding(name, "file", f"output does not parse: {type(error).__name__}"),
            *(Finding(name, "raw bytes", _shape(n.identifier)) for n in search if n.found_in(everything)),
        ]
    in_header = [n for n in search if n.found_in(header)]
    findings = [Finding(name, "raw bytes", _shape(n.identifier)) for n in in_header]
    values = list(_decoded_values(dataset.file_meta, "file_meta.")) + list(_decoded_values(dataset))
    for needle in search:
        if needle in in_header:
            continue
        where = next((w for w, text in values if needle.found_in(text)), None)
        if where:
            findings.append(Finding(name, where, _shape(needle.identifier)))
    return findings


def _retained_texts(dataset: Dataset, profile: Profile, out: set[str]) -> None:
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or ():
                _retained_texts(item, profile, out)
        elif (
            not element.tag.is_private
            and profile.action_for(int(element.tag)) in (None, Action.KEEP)
            and element.VR in TEXT_VRS
            and isinstance(element.value, str)
        ):
            out.add(element.value.strip())


def index_search(index: Path, identifiers: Iterable[str], profile: Profile) -> set[str]:
    """What to search a rebuilt DICOMDIR for: every identifier of the run, except words of the
    text it retains (a code meaning "Person Observer Name" beside a patient called "Observer").

    The index copies its retained text from the written files, each scanned for its own
    identifiers, so only another file's identifier can match there: set aside, as in
    :func:`identifiers_from_tree`.
    """
    retained: set[str] = set()
    _retained_texts(dcmread(index), profile, retained)
    corpus = "\n".join(sorted(retained)).lower()
    return {needle.identifier for needle in needles(identifiers) if not needle.found_in(corpus)}


@dataclass
class OriginalIdentifiers:
    """What the originals under a folder hold, for :func:`scan_tree`."""

    per_instance: dict[str, set[str]] = field(default_factory=dict)  # SOPInstanceUID -> identifiers
    shared: set[str] = field(default_factory=set)  # every non-date identifier, tree-wide
    every: set[str] = field(default_factory=set)  # all identifiers, dates too
    ambiguous: set[str] = field(default_factory=set)  # set aside, see identifiers_from_tree


def _is_date(text: str) -> bool:
    try:
        dt.datetime.strptime(text[:8], "%Y%m%d")
    except ValueError:
        return False
    return text[:8].isdigit() and (len(text) == 8 or text[8:].replace(".", "").lstrip("+-").isdigit())


def identifiers_from_tree(
    source: Path, profile: Profile, progress: Callable[[], None] | None = None
) -> OriginalIdentifiers:
    """Identifying values of every file under ``source`` that pydicom can read at all.

    An identifying value that some original also carries as a word of an attribute the profile
    retains (a manufacturer typed in as institution name, a test patient called "Observer" next
    to the code meaning "Person Observer Name") cannot be attributed in a tree-wide search, so it
    is set aside and counted, not searched tree-wide (it is still searched in the output of its
    own original).
    """
    result = OriginalIdentifiers()
    retained: set[str] = set()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # originals are read leniently on purpose
                dataset = dcmread(path, force=True)
            found = collect_identifiers(dataset, profile)
            _retained_texts(dataset, profile, retained)
        except Exception as error:  # unreadable originals still count as scanned inputs
            log.debug("%s: not read for identifiers (%s)", path, error)
        else:
            result.every |= found
            if "SOPInstanceUID" in dataset:
                result.per_instance.setdefault(str(dataset.SOPInstanceUID), set()).update(found)
        if progress:
            progress()
    corpus = "\n".join(sorted(retained)).lower()
    result.ambiguous = {needle.identifier for needle in needles(result.every) if needle.found_in(corpus)}
    result.every -= result.ambiguous
    result.shared = {value for value in result.every if not _is_date(value)}
    return result


def output_files(destination: Path) -> list[Path]:
    """Every DICOM file a run writes: the ``.dcm`` instances, a rebuilt DICOMDIR and its members."""
    files = set(destination.rglob("*.dcm"))
    index = destination / DICOMDIR_NAME
    if index.is_file():
        files.add(index)
        try:
            files.update(Path(member.path) for member in FileSet(dcmread(index)))
        except Exception as error:  # an index that does not parse is still scanned (as raw bytes)
            log.warning("%s does not parse as a file set: %s", index, error)
    return sorted(files)


def scan_files(
    destination: Path, files: Iterable[tuple[Path, Iterable[str]]], progress: Callable[[], None] | None = None
) -> ScanReport:
    """Search each output file (under ``destination``) for its identifiers."""
    report = ScanReport()
    searched: set[str] = set()
    for path, identifiers in files:
        search = needles(identifiers)
        searched.update(n.identifier for n in search)
        findings = scan_file(path, search, str(path.relative_to(destination)))
        report.files_scanned += 1
        if findings:
            report.files_with_residuals += 1
            report.findings.extend(findings)
        if progress:
            progress()
    report.identifiers = len(searched)
    return report


def scan_tree(
    destination: Path,
    source: Path,
    profile: Profile,
    key: SiteKey | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScanReport:
    """``insite site scan DST --original SRC``: original identifiers against every output file.

    Every output file is searched for every name, ID, UID, address... of every original. Dates
    are different: shifted dates are real dates, and across a tree some shifted date will equal
    another patient's original date by chance. So with the site ``key`` (read only: it pairs an
    output with its original by the keyed UID), a paired output is also searched for its own
    original's dates; an output that pairs with no original is searched for every date of every
    original. Without the key, dates are searched only in unpaired mode, i.e. everywhere, and
    chance matches are possible.
    """
    originals = identifiers_from_tree(source, profile, (lambda: progress("read originals")) if progress else None)
    by_output_uid = {key.uid(uid): found for uid, found in originals.per_instance.items()} if key else {}

    def searches():
        for path in output_files(destination):
            try:
                uid = str(dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            except Exception:
                uid = ""
            own = by_output_uid.get(uid)
            yield path, sorted(originals.shared | own) if own is not None else sorted(originals.every)

    report = scan_files(destination, searches(), (lambda: progress("scan output")) if progress else None)
    report.identifiers, report.ambiguous = len(originals.every), len(originals.ambiguous)
    return report
