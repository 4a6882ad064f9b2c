"""Deface a de-identified tree: every head series is written defaced, or quarantined; nothing half-done.

``SRC`` is read as ``insite site deid`` writes it (``*.dcm`` files, any depth), grouped into series
by SeriesInstanceUID. Each series is screened (:mod:`.screening`):

- not a head: its files are copied to ``DST`` unchanged, at the same relative path, so ``DST`` is
  a complete dataset (ingest reads it as it read ``SRC``);
- a head or possible head: the template is fitted (:mod:`.registration`) and checked
  (:mod:`.quality`); if the fit holds, the series is written defaced as a new series under
  ``DST/<subject>/<study>/<new series UID>/<new SOP instance UID>.dcm``; if not, or if anything
  else goes wrong, the whole series goes to ``QUARANTINE/<series UID>/`` with ``reason.json``.

A defaced series is written to a staging folder inside ``DST`` and moved into place in one rename,
so ``DST`` never holds part of one. Files that are not ``*.dcm`` (reports, a DICOMDIR, which would
index files that defacing replaced) are not copied. QA pictures, which show the faces they remove,
go to ``QA_FOLDER/<subject>/<series UID>.png``; like the quarantine, it must be outside ``DST``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread

from siteprep.deface.derived import defaced_slice, derived_uid
from siteprep.deface.errors import DefaceError
from siteprep.deface.masking import air_value, face_on_series
from siteprep.deface.outcome import Outcome, Quarantine, Reason, SeriesResult
from siteprep.deface.picture import write_qa_picture
from siteprep.deface.quality import assess
from siteprep.deface.registration import fit_template, series_image
from siteprep.deface.screening import HeaderVerdict, Screening, extent_problem, screen_header, stack_extent_mm
from siteprep.deface.settings import DefaceSettings
from siteprep.deface.template import HeadTemplate, shipped_template
from siteprep.folders import layout_problem, private_folder
from siteprep.series import Series, add_slice, read_volume, stack_slices

log = logging.getLogger(__name__)
UNREADABLE_SERIES = "unreadable"  # the pseudo-series of files whose header does not parse


@dataclass
class DefaceReport:
    """Every series' outcome; ``placed`` maps each input file to the file it became in ``DST``."""

    series: list[SeriesResult] = field(default_factory=list)
    placed: dict[Path, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        counts = Counter(result.outcome.value for result in self.series)
        return {
            "tool": "insite site deface",
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "series": {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome},
            "quarantined_by_reason": dict(Counter(r.reason.value for r in self.series if r.reason)),
            "seconds": round(self.seconds, 2),
            "results": [result.as_dict() for result in self.series],
        }


def check_layout(source: Path, destination: Path, quarantine: Path, qa_folder: Path) -> None:
    """Refuse folders that would mix faces into the output or the output into the input."""
    if not source.is_dir():
        raise DefaceError(f"source folder {source} does not exist")
    kept_out = (("quarantine folder", quarantine), ("QA picture folder", qa_folder))
    if problem := layout_problem(source, destination, kept_out, "it holds faces: keep it out"):
        raise DefaceError(problem)


def read_series(source: Path, progress: Callable[[], None] | None = None) -> tuple[dict[str, Series], list[Path]]:
    """Every ``*.dcm`` file under ``source`` by series, and the files whose header does not parse."""
    found: dict[str, Series] = {}
    unreadable: list[Path] = []
    for path in sorted(source.rglob("*.dcm")):
        try:
            header = dcmread(path, stop_before_pixels=True)
            if "SeriesInstanceUID" not in header:
                raise ValueError("no SeriesInstanceUID")
        except Exception as error:  # any parse failure: the file is quarantined, never passed on
            log.warning("%s: header unreadable (%s)", path, error)
            unreadable.append(path)
        else:
            add_slice(found, path, header)
        if progress:
            progress()
    return found, unreadable


def _staging(destination: Path) -> AbstractContextManager[Path]:
    """A private folder inside ``destination``: a defaced series is complete there before it is moved."""
    return private_folder(destination, ".deface-staging-")


@dataclass
class _Defaced:
    """A series defaced in staging, with what the report and QA picture need."""

    folder: Path
    series_uid: str
    files: dict[Path, str]  # input file -> output file name


class Defacer:
    """One run: screens, defaces, copies or quarantines series, recording each in ``report``.

    With ``move`` the input files are moved rather than copied (``insite site deid`` hands over
    its own fresh output this way); a defaced series' inputs are then left for the caller to delete.
    """

    def __init__(
        self,
        source: Path,
        destination: Path,
        quarantine: Path,
        qa_folder: Path,
        settings: DefaceSettings,
        move: bool = False,
        template: HeadTemplate | None = None,
    ) -> None:
        self.source, self.destination, self.quarantine, self.qa_folder = source, destination, quarantine, qa_folder
        self.settings = settings
        self.move = move
        self.template = template or shipped_template()
        self.report = DefaceReport()

    def _transfer(self, path: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.move:
            shutil.move(path, target)
        else:
            shutil.copy2(path, target)

    def run(self, series: dict[str, Series], unreadable: list[Path], progress: Callable[[], None] | None) -> None:
        started = time.perf_counter()
        for path in unreadable:
            relative = path.relative_to(self.source)
            self._quarantine_files(str(relative).replace(os.sep, "_"), [path], Reason.UNREADABLE, "header unreadable")
            self.report.series.append(
                SeriesResult(str(relative), "unknown", 1, Outcome.QUARANTINED, "header unreadable", Reason.UNREADABLE)
            )
        with _staging(self.destination) as staging:
            for uid in sorted(series):
                self.report.series.append(self.one(series[uid], staging))
                if progress:
                    progress()
        self.report.seconds = time.perf_counter() - started

    def one(self, series: Series, staging: Path) -> SeriesResult:
        """Screen, then deface, copy or quarantine one series; any failure quarantines it whole."""
        started = time.perf_counter()
        paths = [path for path, _ in series.headers]
        screening = screen_header(series.headers[0][1], self.settings)
        result = SeriesResult(series.uid, series.subject, len(paths), Outcome.NOT_A_HEAD, screening.why)
        try:
            if screening.verdict is not HeaderVerdict.NOT_A_HEAD:
                result.outcome = self._deface(series, screening, staging, result)
        except Quarantine as quarantine:
            result.outcome, result.reason, result.why = Outcome.QUARANTINED, quarantine.reason, quarantine.detail
        except Exception as error:  # fail closed: a series that breaks the defacer is not passed on
            log.exception("defacing series %s failed", series.uid)
            result.outcome, result.reason = Outcome.QUARANTINED, Reason.DEFACE_FAILED
            result.why = f"{type(error).__name__}: {error}"[:200]
        if result.outcome is Outcome.NOT_A_HEAD:
            for path in paths:
                target = self.destination / path.relative_to(self.source)
                self._transfer(path, target)
                self.report.placed[path] = target
        elif result.outcome is Outcome.QUARANTINED:
            assert result.reason is not None  # every quarantine above names its reason
            self._quarantine_files(series.uid, paths, result.reason, result.why)
        result.seconds = time.perf_counter() - started
        log.info("series %s: %s (%s)", series.uid, result.outcome.value, result.why)
        return result

    def _deface(self, series: Series, screening: Screening, staging: Path, result: SeriesResult) -> Outcome:
        """Deface ``series`` into ``DST``; NOT_A_HEAD for a possible head too small or wide to be one."""
        try:
            ordered, ras_affine = stack_slices(series)
        except ValueError as error:
            if screening.verdict is HeaderVerdict.POSSIBLE_HEAD and len(series.headers) < 2:
                return Outcome.NOT_A_HEAD  # a single image without a body part: no volume to hold a head
            raise Quarantine(Reason.NOT_STACKABLE, str(error)) from None
        first = ordered[0][1]
        shape = (int(first.Columns), int(first.Rows), len(ordered))
        problem = extent_problem(screening, stack_extent_mm(ras_affine, shape), self.settings)
        if problem:
            if screening.verdict is HeaderVerdict.POSSIBLE_HEAD:
                result.why = f"{screening.why}; {problem}"
                return Outcome.NOT_A_HEAD
            raise Quarantine(Reason.FIELD_OF_VIEW_TOO_SMALL, problem)
        try:
            volume = read_volume(ordered).transpose(2, 1, 0)  # (slices, rows, columns)
        except Exception as error:  # undecodable pixel data
            raise Quarantine(Reason.UNREADABLE, f"pixel data: {type(error).__name__}: {error}"[:200]) from None
        modality = str(first.Modality)
        image = series_image(volume, ras_affine)
        fit = fit_template(image, modality, self.template, self.settings.registration_mm)
        quality = assess(fit, self.template)
        result.fit = {"mutual_information": round(fit.metric, 3), **quality.as_dict()}
        face = face_on_series(image, self.template, fit.transform)
        air = air_value(modality, volume)
        problems = quality.problems(self.settings)
        picture = self.qa_folder / series.subject / f"{series.uid}.png"
        verdict = f"quarantined: {'; '.join(problems)}" if problems else "defaced"
        result.qa_picture = str(
            write_qa_picture(image, face, air, modality, picture, f"{series.subject} {series.uid}\n{verdict}")
        )
        if problems:
            raise Quarantine(Reason.LOW_CONFIDENCE, "; ".join(problems))
        defaced = self._write(ordered, face, air, staging)
        folder = self.destination / ordered[0][0].parent.relative_to(self.source).parent / defaced.series_uid
        self._place(defaced.folder, folder)
        self.report.placed.update({path: folder / name for path, name in defaced.files.items()})
        result.output_series = defaced.series_uid
        result.why = f"{screening.why}; face: {int(face.sum())} voxels set to {air:g}"
        return Outcome.DEFACED

    def _write(self, ordered: list, face: np.ndarray, air: float, staging: Path) -> _Defaced:
        """Every slice, defaced, into a fresh folder under ``staging``; a failure quarantines the series."""
        series_uid = derived_uid("series", str(ordered[0][1].SeriesInstanceUID))
        folder = Path(tempfile.mkdtemp(dir=staging))
        files: dict[Path, str] = {}
        try:
            for index, (path, _) in enumerate(ordered):
                dataset = defaced_slice(path, face[index], air, series_uid)
                name = f"{dataset.SOPInstanceUID}.dcm"
                dataset.save_as(folder / name, enforce_file_format=True)
                files[path] = name
        except Exception as error:  # nothing of a half-written series reaches DST
            shutil.rmtree(folder, ignore_errors=True)
            raise Quarantine(Reason.WRITE_FAILED, f"{type(error).__name__}: {error}"[:200]) from None
        return _Defaced(folder, series_uid, files)

    def _place(self, staged: Path, folder: Path) -> None:
        """Move a complete defaced series into ``DST`` in one rename (replacing an earlier run's copy)."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():  # the same UIDs: a re-run of the same input
            shutil.rmtree(folder)
        os.replace(staged, folder)

    def _quarantine_files(self, name: str, paths: list[Path], reason: Reason, detail: str) -> None:
        """The series' files, moved or copied to ``QUARANTINE/<name>/`` beside a ``reason.json``."""
        folder = self.quarantine / name
        self.quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in paths:
            self._transfer(path, folder / path.name)
        record = {"series": name, "files": len(paths), "reason": reason.value, "detail": detail}
        (folder / "reason.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def deface_tree(
    source: Path,
    destination: Path,
    quarantine: Path,
    qa_folder: Path,
    settings: DefaceSettings,
    progress: Callable[[str], None] | None = None,
) -> DefaceReport:
    """Deface every head series under ``source`` into ``destination``; returns the report.

    ``progress`` is called with "read headers" once per file and "deface" once per series.
    """
    check_layout(source, destination, quarantine, qa_folder)
    series, unreadable = read_series(source, (lambda: progress("read headers")) if progress else None)
    defacer = Defacer(source, destination, quarantine, qa_folder, settings)
    defacer.run(series, unreadable, (lambda: progress("deface")) if progress else None)
    return defacer.report
