"""Dataset QA for a site's training folder (``insite site check``).

Reads the case index (:func:`client.cases.discover_cases`) and each volume's header and label
values, and reports what would make training silently wrong: labels on a different grid than
their image, empty or non-integer labels, images without a case entry (missing labels),
duplicate series (the same voxels twice, which leaks between train and validation), orientation
or spacing that differs across cases, and too few cases to train and validate.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from client.cases import VOLUME_SUFFIXES, discover_cases


@dataclass
class CaseQA:
    case_id: str
    split: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    label_values: list[int]


@dataclass
class QAReport:
    cases: list[CaseQA] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"ok": self.ok, "cases": [vars(c) for c in self.cases], "errors": self.errors, "warnings": self.warnings}


def _case(case, report: QAReport, digests: dict[str, str]) -> None:
    # cast: nib.load is typed as returning the FileBasedImage base; a NIfTI volume is a SpatialImage
    image, label = cast(SpatialImage, nib.load(case.image)), cast(SpatialImage, nib.load(case.label))
    voxels = np.asarray(image.dataobj)
    digest = hashlib.sha256(voxels.tobytes()).hexdigest()
    if digest in digests:
        report.errors.append(f"case {case.case_id}: same image voxels as case {digests[digest]} (duplicate series)")
    digests.setdefault(digest, case.case_id)
    values = np.asarray(label.dataobj)
    labels = sorted(int(v) for v in np.unique(values))
    report.cases.append(
        CaseQA(
            case.case_id,
            case.split,
            tuple(int(s) for s in image.shape),
            tuple(round(float(z), 4) for z in image.header.get_zooms()[:3]),
            "".join(nib.aff2axcodes(image.affine)),
            labels,
        )
    )
    if image.shape != label.shape:
        report.errors.append(f"case {case.case_id}: label shape {label.shape} != image shape {image.shape}")
    elif not np.allclose(image.affine, label.affine, atol=1e-3):
        report.errors.append(f"case {case.case_id}: label and image affines differ (different grids)")
    if not np.array_equal(values, np.round(values)) or (values.size and values.min() < 0):
        report.errors.append(f"case {case.case_id}: label values must be integers >= 0")
    if labels == [0] or not labels:
        report.warnings.append(f"case {case.case_id}: label is empty (background only)")


def check_site_data(data_path: Path, min_cases: int = 2, site: str = "local") -> QAReport:
    """QA of ``data_path``; raises :class:`~common.errors.SiteDataError` if it holds no usable cases."""
    cases = discover_cases(site, data_path)
    report = QAReport()
    digests: dict[str, str] = {}
    for case in cases:
        _case(case, report, digests)
    indexed = {case.image.resolve() for case in cases}
    for image in sorted((data_path / "images").glob("*")):
        if image.name.endswith(VOLUME_SUFFIXES) and image.resolve() not in indexed:
            report.errors.append(f"image {image.name} has no case entry (missing label?)")
    if len(cases) < min_cases:
        report.errors.append(f"only {len(cases)} case(s); at least {min_cases} needed")
    if not any(case.split == "val" for case in cases):
        report.warnings.append("no validation case: Dice cannot be reported")
    for what, values in (
        ("orientation", [c.orientation for c in report.cases]),
        ("spacing", [c.spacing for c in report.cases]),
    ):
        counts = Counter(values)
        if len(counts) > 1:
            report.warnings.append(f"{what} differs across cases: {dict(counts.most_common(4))}")
    return report
