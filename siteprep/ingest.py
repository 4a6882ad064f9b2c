"""De-identified DICOM series -> training cases in the layout of :mod:`client.cases`.

One case per image series, split strictly by SeriesInstanceUID: two series are never merged, and
a series whose slices do not form one regular stack (mixed orientations, repeated or unevenly
spaced positions, differing matrix sizes; :mod:`siteprep.series`) is skipped with a reason. The
label comes from a DICOM-SEG that references the series (read with highdicom, frame by frame
against the series' own SOP instances) or from a label volume ``<SeriesInstanceUID>.nii.gz`` in
a labels folder, named by either the de-identified UID or, given the site's key, the original one.
Volumes are written as NIfTI in RAS+ (DICOM patient coordinates are LPS+, PS3.3
C.7.6.2.1.1), so image and label share one affine.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import cast

import highdicom as hd
import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage
from pydicom import dcmread
from pydicom.dataset import Dataset

from client.cases import UNKNOWN_MODALITY, Case, Split, write_index
from common.errors import SiteDataError
from siteprep.deid.keys import SiteKey
from siteprep.series import IMAGE_MODALITIES, Series, add_slice, read_volume, stack_slices

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    cases: list[Case] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # series UID -> reason
    missing_labels: list[str] = field(default_factory=list)  # series UIDs without any label

    def as_dict(self) -> dict:
        return {
            "cases": len(self.cases),
            "train": sum(c.split == "train" for c in self.cases),
            "val": sum(c.split == "val" for c in self.cases),
            "skipped": self.skipped,
            "missing_labels": self.missing_labels,
        }


def _scan(source: Path, progress: Callable[[], None] | None) -> tuple[dict[str, Series], dict[str, Path]]:
    """Image series by SeriesInstanceUID, and SEG files by the series they reference."""
    series: dict[str, Series] = {}
    segs: dict[str, Path] = {}
    for path in sorted(source.rglob("*.dcm")):
        header = dcmread(path, stop_before_pixels=True)
        modality = str(header.get("Modality", ""))
        if modality == "SEG":
            for reference in header.get("ReferencedSeriesSequence", []):
                segs[str(reference.SeriesInstanceUID)] = path
        elif modality in IMAGE_MODALITIES and "SeriesInstanceUID" in header:
            add_slice(series, path, header)
        if progress:
            progress()
    return series, segs


def _seg_label(seg_path: Path, ordered: list[tuple[Path, Dataset]]) -> np.ndarray:
    seg = hd.seg.segread(seg_path)
    uids = [str(h.SOPInstanceUID) for _, h in ordered]
    labels = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    return np.asarray(labels, dtype=np.uint8).transpose(2, 1, 0)


def _case_id(series: Series) -> str:
    return f"{series.subject}-{hashlib.sha256(series.uid.encode()).hexdigest()[:8]}"


def _held_out(position: int, val_fraction: Fraction) -> bool:
    """Whether the case at ``position`` is validation: spread evenly, ``val_fraction`` of them.

    The default 1/5 holds out every fifth case, as :mod:`client.cases` does for a folder without
    an index; exact fractions keep e.g. 8 of 56 at exactly 8.
    """
    return floor((position + 1) * val_fraction) > floor(position * val_fraction)


def label_volumes(labels_dir: Path | None, key: SiteKey | None = None) -> dict[str, Path]:
    """Label volumes by the de-identified SeriesInstanceUID of the series they label.

    Annotations are usually drawn on the original images, so their files carry the original UID,
    which de-identification replaced. The replacement is a keyed hash of the original
    (:meth:`SiteKey.uid`), so with the site's key each original name maps to the UID that
    ``insite site deid`` wrote. Names already in de-identified terms are taken as they are.
    """
    if labels_dir is None:
        return {}
    if not labels_dir.is_dir():
        raise SiteDataError(f"ingest: labels folder {labels_dir} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(labels_dir.glob("*.nii.gz")):
        uid = path.name.removesuffix(".nii.gz")
        found[uid] = path
        if key is not None:
            found[key.uid(uid)] = path
    return found


def ingest(
    source: Path,
    data_path: Path,
    labels_dir: Path | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    val_fraction: float = 0.2,
    key: SiteKey | None = None,
) -> IngestReport:
    """Turn every image series under ``source`` into a case in ``data_path``.

    ``val_fraction`` of the cases, spread evenly in case-ID order (pseudonym + series hash, so in
    effect random), are held out for validation. ``key`` (the site's de-identification key) lets
    label volumes be named by the original SeriesInstanceUID.
    """
    if not source.is_dir():
        raise SiteDataError(f"ingest: source folder {source} does not exist")
    label_files = label_volumes(labels_dir, key)
    if not 0 <= val_fraction < 1:
        raise SiteDataError(f"ingest: the validation fraction must be in [0, 1), got {val_fraction}")
    held_out = Fraction(val_fraction).limit_denominator(1000)
    series, segs = _scan(source, (lambda: progress("read headers")) if progress else None)
    report = IngestReport()
    for uid, item in sorted(series.items(), key=lambda kv: _case_id(kv[1])):
        if progress:
            progress("convert")
        label_volume = label_files.get(uid)
        if uid not in segs and label_volume is None:
            report.missing_labels.append(uid)
            continue
        try:
            ordered, affine = stack_slices(item)
            image = read_volume(ordered)
            if uid in segs:
                label = _seg_label(segs[uid], ordered)
            else:
                assert label_volume is not None  # a series with neither label was skipped above
                # cast: nib.load is typed as returning the FileBasedImage base; a label volume is a SpatialImage
                label = np.asarray(cast(SpatialImage, nib.load(label_volume)).dataobj).astype(np.uint8)
            if label.shape != image.shape:
                raise ValueError(f"label shape {label.shape} differs from image shape {image.shape}")
        except Exception as error:  # one bad series must not stop the others; it is reported
            report.skipped[uid] = f"{type(error).__name__}: {error}"
            log.warning("series %s skipped: %s", uid, error)
            continue
        case_id = _case_id(item)
        split: Split = "val" if _held_out(len(report.cases), held_out) else "train"
        case = Case(
            case_id,
            data_path / "images" / f"{case_id}.nii.gz",
            data_path / "labels" / f"{case_id}.nii.gz",
            split,
            str(ordered[0][1].get("Modality", UNKNOWN_MODALITY)),
        )
        if not dry_run:
            case.image.parent.mkdir(parents=True, exist_ok=True)
            case.label.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(image, affine), case.image)
            nib.save(nib.Nifti1Image(label, affine), case.label)
        report.cases.append(case)
    if not dry_run and report.cases:
        write_index(data_path, report.cases)
    return report
