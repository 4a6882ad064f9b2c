"""The shipped head template with its face mask (see ``data/README.md`` for where they come from)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import SimpleITK as sitk

DATA = Path(__file__).with_name("data")
TEMPLATE_FILE = DATA / "head_template.nii.gz"
FACE_MASK_FILE = DATA / "face_mask.nii.gz"


@dataclass(frozen=True)
class HeadTemplate:
    """An average T1-weighted head with its face, and the mask of that face on the same 2 mm grid.

    ``image`` is float32 (0-255), ``face`` uint8 (1 = face, 0 = keep); both in LPS patient
    coordinates, as SimpleITK reads NIfTI.
    """

    image: sitk.Image
    face: sitk.Image


@cache
def shipped_template() -> HeadTemplate:
    """Read once per process: every series of a run is registered to the same template."""
    return HeadTemplate(
        sitk.ReadImage(str(TEMPLATE_FILE), sitk.sitkFloat32), sitk.ReadImage(str(FACE_MASK_FILE), sitk.sitkUInt8)
    )
