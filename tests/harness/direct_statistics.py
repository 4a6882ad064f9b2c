"""A site's statistics computed straight from its files, without the project's statistics code.

The tests compare what the coordinator received with this: nibabel reads each volume, numpy bins
it, SimpleITK's shape statistics measure each lesion in mm^3; the release rule is restated here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from client.cases import discover_cases
from common.settings import StatsSettings


def direct_statistics(folder: Path, site: str, settings: StatsSettings) -> dict[str, Any]:
    """Case counts, intensity histograms, slice-spacing bins, lesion count and volume bins (None = withheld)."""
    cases = discover_cases(site, folder)
    enough = len(cases) >= settings.min_count

    def released(count: int, pooled: bool = True) -> int | None:
        if pooled and not enough:
            return None
        return count if count == 0 or count >= settings.min_count else None

    intensity: dict[str, np.ndarray] = {}
    spacing_z = np.zeros(len(settings.spacing_edges_mm) + 1, dtype=int)
    lesion_ml: list[float] = []
    for case in cases:
        image = nib.load(case.image)
        low, high = settings.intensity_range(case.modality)
        counts, _ = np.histogram(image.get_fdata(), bins=settings.intensity_bins, range=(low, high))
        intensity[case.modality] = intensity.get(case.modality, 0) + counts
        spacing_z[np.searchsorted(settings.spacing_edges_mm, image.header.get_zooms()[2], side="right")] += 1
        shapes = sitk.LabelShapeStatisticsImageFilter()
        shapes.Execute(sitk.ConnectedComponent(sitk.ReadImage(str(case.label)) > 0, True))
        lesion_ml += [shapes.GetPhysicalSize(n) / 1000.0 for n in shapes.GetLabels()]
    bins = len(settings.lesion_edges_ml) + 1
    lesion_bins = np.bincount(np.searchsorted(settings.lesion_edges_ml, lesion_ml, side="right"), minlength=bins)
    return {
        "cases": {split: released(sum(c.split == split for c in cases), pooled=False) for split in ("train", "val")},
        "intensity": {m: [released(int(c)) for c in counts] for m, counts in intensity.items()},
        "spacing_z": [released(int(c)) for c in spacing_z],
        "lesions": released(len(lesion_ml)),
        "lesion_volume_ml": [released(int(c)) for c in lesion_bins],
    }


def as_sent(figures: dict[str, Any]) -> dict[str, Any]:
    """The same figures picked out of what the coordinator recorded for one site."""
    return {
        "cases": figures["cases"],
        "intensity": {m: found["hist"] for m, found in figures["intensity"].items()},
        "spacing_z": figures["spacing_mm"]["z"],
        "lesions": figures["lesions"],
        "lesion_volume_ml": figures["lesion_volume_ml"],
    }
