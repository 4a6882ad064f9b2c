"""The registration's own quality check: is the fitted template a head lying where the series' head is?

Mutual information alone cannot say: its value depends on the images, and an affine transform can
squeeze a head template onto almost any blob of tissue. So a fit is trusted only when

- the transform is a plausible head-to-head one: no axis grows or shrinks by more than
  ``max_scale_change`` (adult heads differ by about 10 % in each dimension);
- the registered template's head covers the series' head, inside the series' field of view
  (Dice >= ``min_head_overlap``); the heads are each image thresholded by Otsu's method, the
  largest component with its holes filled, so the check does not depend on the modality;
- and the two heads agree where the face is (Dice >= ``min_face_overlap`` inside the registered
  face region): a fit that is good on the skull but off at the face would leave a face.

A series that fails any of these is quarantined, never cut: it may not be a head at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from siteprep.deface.registration import Fit
from siteprep.deface.settings import DefaceSettings
from siteprep.deface.template import HeadTemplate


@dataclass(frozen=True)
class FitQuality:
    head_overlap: float
    face_overlap: float
    scales: tuple[float, float, float]  # singular values of the transform's matrix
    face_voxels: int  # face-region voxels inside the series' field of view, at registration resolution

    def problems(self, settings: DefaceSettings) -> list[str]:
        """Why the fit cannot be trusted (empty when it can)."""
        found = []
        low, high = 1 - settings.max_scale_change, 1 / (1 - settings.max_scale_change)
        if not all(low <= s <= high for s in self.scales):
            found.append(
                f"template scaled by {'/'.join(f'{s:.2f}' for s in self.scales)}, outside {low:.2f}-{high:.2f}"
            )
        if self.head_overlap < settings.min_head_overlap:
            found.append(f"head overlap {self.head_overlap:.2f} < {settings.min_head_overlap:g}")
        if self.face_voxels == 0:
            found.append("the face region lies outside the field of view")
        elif self.face_overlap < settings.min_face_overlap:
            found.append(f"face overlap {self.face_overlap:.2f} < {settings.min_face_overlap:g}")
        return found

    def as_dict(self) -> dict[str, float]:
        return {
            "head_overlap": round(self.head_overlap, 3),
            "face_overlap": round(self.face_overlap, 3),
            **{f"scale_{axis}": round(s, 3) for axis, s in zip("abc", self.scales, strict=True)},
        }


def head_mask(image: sitk.Image) -> sitk.Image:
    """The head: above Otsu's threshold, the largest component, closed and with its holes filled."""
    foreground = sitk.OtsuThreshold(image, 0, 1)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True) == 1
    return sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(largest, [2, 2, 2]))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 0.0


def assess(fit: Fit, template: HeadTemplate) -> FitQuality:
    """Measure ``fit`` on the registration grid (a few milliseconds: 4 mm voxels)."""
    series_head = sitk.GetArrayFromImage(head_mask(fit.series)).astype(bool)
    template_head = sitk.Resample(head_mask(fit.template), fit.series, fit.transform, sitk.sitkNearestNeighbor, 0)
    face = sitk.Resample(template.face, fit.series, fit.transform, sitk.sitkNearestNeighbor, 0)
    placed = sitk.GetArrayFromImage(template_head).astype(bool)
    in_face = sitk.GetArrayFromImage(face).astype(bool)
    scales = np.linalg.svd(np.array(fit.transform.GetMatrix()).reshape(3, 3), compute_uv=False)
    return FitQuality(
        head_overlap=_dice(series_head, placed),
        face_overlap=_dice(series_head & in_face, placed & in_face),
        scales=(float(scales[0]), float(scales[1]), float(scales[2])),
        face_voxels=int(in_face.sum()),
    )
