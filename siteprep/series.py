"""DICOM image series: slice files grouped by SeriesInstanceUID and stacked into one regular volume.

Shared by ingest (series -> training case) and defacing (series -> defaced series), so that both
accept exactly the same stacks: a series whose slices do not form one regular stack (mixed
orientations, repeated or unevenly spaced positions, differing matrix sizes, multi-frame objects)
is refused with a reason rather than guessed at. Volumes come in the NIfTI axis order
(columns, rows, slices) with a voxel-to-RAS affine (DICOM patient coordinates are LPS+,
PS3.3 C.7.6.2.1.1), so image and label share one affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

IMAGE_MODALITIES = frozenset({"CT", "MR", "PT"})
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPACING_TOLERANCE = 1e-3  # relative; slices further apart than this are not one regular stack


@dataclass
class Series:
    uid: str
    subject: str
    headers: list[tuple[Path, Dataset]] = field(default_factory=list)


def add_slice(found: dict[str, Series], path: Path, header: Dataset) -> None:
    """File ``header`` (read from ``path``) under its series in ``found``, making the series on first sight."""
    uid = str(header.SeriesInstanceUID)
    entry = found.setdefault(uid, Series(uid, str(header.get("PatientID", "unknown"))))
    entry.headers.append((path, header))


def stack_slices(series: Series) -> tuple[list[tuple[Path, Dataset]], np.ndarray]:
    """Slices sorted along the stack normal and the voxel-to-RAS affine; raises ValueError."""
    first = series.headers[0][1]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError("multi-frame images are not supported (one file per slice only)")
    orientation = np.array(first.ImageOrientationPatient, dtype=float)
    shape = (first.Rows, first.Columns)
    for _, header in series.headers:
        if (header.Rows, header.Columns) != shape:
            raise ValueError("slices differ in matrix size")
        if not np.allclose(np.array(header.ImageOrientationPatient, dtype=float), orientation, atol=1e-4):
            raise ValueError("slices differ in orientation")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    ordered = sorted(
        series.headers, key=lambda item: float(np.dot(normal, np.array(item[1].ImagePositionPatient, dtype=float)))
    )
    positions = np.array([np.array(h.ImagePositionPatient, dtype=float) for _, h in ordered])
    if len(ordered) < 2:
        raise ValueError("a single slice is not a volume")
    steps = np.diff(positions @ normal)
    if np.any(steps <= 0) or np.ptp(steps) > SPACING_TOLERANCE * max(abs(float(steps.mean())), 1.0):
        raise ValueError("slice positions repeat or are unevenly spaced (two stacks in one series?)")
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_spacing  # +i (column index) runs along the row direction
    affine[:3, 1] = col_dir * row_spacing  # +j (row index) runs along the column direction
    affine[:3, 2] = (positions[-1] - positions[0]) / (len(ordered) - 1)
    affine[:3, 3] = positions[0]
    return ordered, LPS_TO_RAS @ affine


def read_volume(ordered: list[tuple[Path, Dataset]]) -> np.ndarray:
    """(columns, rows, slices) in modality units (rescale applied), the NIfTI axis order."""
    planes = []
    for path, _ in ordered:
        ds = dcmread(path)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(ds.pixel_array.astype(np.float32) * slope + intercept)
    volume = np.stack(planes, axis=-1).transpose(1, 0, 2)
    integral = np.array_equal(volume, np.round(volume)) and np.abs(volume).max() < 32768
    return volume.astype(np.int16) if integral else volume
