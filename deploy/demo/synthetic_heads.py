"""Heads with faces, and a head-sized body that is not a head, for the defacing tests and benchmark.

The head is the shipped template itself (:mod:`siteprep.deface.template`), resampled onto an
axial scanner grid in a random pose: rotated about a random axis by up to ``max_angle_deg``,
shifted, and cropped at the top and bottom as a real field of view crops. The template's own
face mask and head, carried by the same pose, are the ground truth a defacer is measured
against. Write either with :func:`deploy.demo.synthetic_dicom.write_series` (``spacing`` and
``origin`` are in its conventions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from siteprep.deface.quality import head_mask
from siteprep.deface.template import shipped_template


@dataclass(frozen=True)
class Phantom:
    """A (slices, rows, columns) volume on an axial grid with its ground truth."""

    volume: np.ndarray  # modality units
    spacing: tuple[float, float, float]  # (slice, row, column) mm
    origin: tuple[float, float, float]  # patient position (x, y, z) mm of the first voxel
    face: np.ndarray  # bool: the template's face region, where a defacer must remove voxels
    head: np.ndarray  # bool: inside the head


def _grid(size_mm: np.ndarray, centre: np.ndarray, spacing_mm: float) -> sitk.Image:
    size = np.round(size_mm / spacing_mm).astype(int)
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetOrigin([float(v) for v in centre - (size - 1) * spacing_mm / 2])
    return grid


def _phantom(volume: sitk.Image, face: sitk.Image, head: sitk.Image, spacing_mm: float) -> Phantom:
    origin = volume.GetOrigin()
    return Phantom(
        volume=sitk.GetArrayFromImage(volume),
        spacing=(spacing_mm, spacing_mm, spacing_mm),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        face=sitk.GetArrayFromImage(face).astype(bool),
        head=sitk.GetArrayFromImage(head).astype(bool),
    )


def posed_head(
    rng: np.random.Generator, spacing_mm: float = 3.0, max_angle_deg: float = 20.0, max_shift_mm: float = 15.0
) -> Phantom:
    """The template in a random pose on an axial grid of ``spacing_mm``, cropped by 0-30 mm top and bottom."""
    template = shipped_template()
    extent = np.array(template.image.GetSize()) * np.array(template.image.GetSpacing())
    centre = np.array(
        template.image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in template.image.GetSize()])
    )
    pose = sitk.VersorRigid3DTransform()
    pose.SetCenter([float(v) for v in centre])
    axis = rng.normal(size=3)
    pose.SetRotation([float(v) for v in axis / np.linalg.norm(axis)], float(np.radians(rng.uniform(0, max_angle_deg))))
    pose.SetTranslation([float(v) for v in rng.uniform(-max_shift_mm, max_shift_mm, 3)])
    crop_bottom, crop_top = rng.uniform(0, 30, 2)
    size_mm = np.array([extent[0], extent[1], extent[2] - crop_bottom - crop_top]) + 10
    grid = _grid(size_mm, centre + np.array([0.0, 0.0, (crop_bottom - crop_top) / 2]), spacing_mm)
    volume = sitk.Resample(template.image, grid, pose, sitk.sitkLinear, 0.0)
    face = sitk.Resample(template.face, grid, pose, sitk.sitkNearestNeighbor, 0)
    head = sitk.Resample(head_mask(template.image), grid, pose, sitk.sitkNearestNeighbor, 0)
    return _phantom(volume, face, head, spacing_mm)


def abdomen(rng: np.random.Generator, spacing_mm: float = 3.0) -> Phantom:
    """A head-sized MR-like abdomen: an elliptic body with fat rim, spine and organs, no face anywhere.

    The body is 180 x 150 mm across, about a head's size, and runs through the whole field of view.
    """
    grid = _grid(np.array([220.0, 200.0, 200.0]), np.zeros(3), spacing_mm)
    z, y, x = (np.indices(grid.GetSize()[::-1]) - (np.array(grid.GetSize()[::-1]) - 1)[:, None, None, None] / 2) * (
        spacing_mm
    )
    body = (x / 90.0) ** 2 + (y / 75.0) ** 2
    values = np.where(body < 1, 100.0, 0.0)
    values[(body < 1) & (body > 0.8)] = 220.0  # subcutaneous fat
    values[(x**2 + (y - 45.0) ** 2) < 15.0**2] = 40.0  # vertebral body
    values[((x + 30.0) ** 2 + (y + 10.0) ** 2) < 35.0**2] = 140.0  # liver
    values[((x - 35.0) ** 2 + y**2 + (z - 20.0) ** 2) < 25.0**2] = 60.0  # a kidney-like blob
    values = np.clip(values + rng.normal(0, 4, values.shape), 0, None).astype(np.float32)
    volume = sitk.GetImageFromArray(values)
    volume.CopyInformation(grid)
    no_face = sitk.Image(grid.GetSize(), sitk.sitkUInt8)
    no_face.CopyInformation(grid)
    inside = sitk.GetImageFromArray((body < 1).astype(np.uint8))
    inside.CopyInformation(grid)
    return _phantom(volume, no_face, inside, spacing_mm)
