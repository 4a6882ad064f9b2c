"""The face on the series' own grid, and the value it is replaced with.

The mask is carried onto the series' voxels by the fitted transform (linear interpolation of the
0/1 mask, kept where at least half a template voxel of face covers the series voxel), so the
series is never resampled and every voxel outside the face keeps its stored value exactly.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from siteprep.deface.template import HeadTemplate

CT_AIR_HU = -1000.0


def face_on_series(series: sitk.Image, template: HeadTemplate, transform: sitk.Transform) -> np.ndarray:
    """Boolean (slices, rows, columns): the series' voxels under the registered face mask."""
    face = sitk.Cast(template.face, sitk.sitkFloat32)
    carried = sitk.Resample(face, series, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(carried) >= 0.5


def air_value(modality: str, volume: np.ndarray) -> float:
    """The modality value for air in this series: what the face becomes.

    MR: the series' minimum (air is the darkest signal; usually 0). CT: -1000 HU, or the minimum
    when the series holds nothing that dark; never lower, because CT minima are often padding
    values (-2048, -3024) outside the reconstruction circle, which would draw a black hole.
    """
    lowest = float(volume.min())
    return max(lowest, CT_AIR_HU) if modality == "CT" else lowest
