"""Make the shipped head template and face mask from pydeface's originals (run once, by a developer).

pydeface 2.1.0 (MIT) ships an average head with its face, ``mean_reg2mean.nii.gz`` (176x256x256,
int16, 8 MB), and ``facemask.nii.gz`` (1 = keep, 0 = face). Registration runs at a few
millimetres anyway, so both are resampled onto a 2 mm isotropic grid in the template's own
orientation, cropped to the head plus a margin, and stored as uint8: the template rescaled to
0-255 (mutual information needs no more grey levels), the mask as 0/1 by majority (linear
interpolation, then 0.5). The result is small enough to ship inside the package, so nothing is
downloaded at run time.

    python -m siteprep.deface.reduce_template /path/to/pydeface/data siteprep/deface/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING_MM = 2.0
MARGIN_MM = 10.0  # air kept around the head: the face's outline must lie inside the grid
HEAD_FRACTION = 0.05  # of the template's 99th percentile: below it is air


def _reduced_grid(template: sitk.Image) -> sitk.Image:
    """A 2 mm grid over the head's bounding box (plus margin), in the template's orientation."""
    array = sitk.GetArrayFromImage(template).astype(np.float32)  # (k, j, i)
    head = array > HEAD_FRACTION * np.percentile(array, 99)
    index_low = np.argwhere(head).min(axis=0)[::-1]  # (i, j, k)
    index_high = np.argwhere(head).max(axis=0)[::-1]
    spacing = np.array(template.GetSpacing())
    margin = np.ceil(MARGIN_MM / spacing).astype(int)
    size = np.array(template.GetSize())
    low = np.maximum(index_low - margin, 0)
    high = np.minimum(index_high + margin, size - 1)
    extent_mm = (high - low) * spacing
    grid = sitk.Image([int(n) for n in np.ceil(extent_mm / SPACING_MM) + 1], sitk.sitkUInt8)
    grid.SetSpacing([SPACING_MM] * 3)
    grid.SetDirection(template.GetDirection())
    grid.SetOrigin(template.TransformIndexToPhysicalPoint([int(v) for v in low]))
    return grid


def reduce(source: Path, target: Path) -> tuple[Path, Path]:
    """Write ``head_template.nii.gz`` and ``face_mask.nii.gz`` under ``target``; returns both paths."""
    template = sitk.ReadImage(str(source / "mean_reg2mean.nii.gz"), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(source / "facemask.nii.gz"), sitk.sitkFloat32)
    grid = _reduced_grid(template)
    smooth = sitk.SmoothingRecursiveGaussian(template, SPACING_MM / 2)  # anti-aliasing before 2 mm
    head = sitk.GetArrayFromImage(sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    scaled = np.clip(np.rint(head / np.percentile(head, 99.9) * 255), 0, 255).astype(np.uint8)
    keep = sitk.GetArrayFromImage(sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkLinear, 1.0, sitk.sitkFloat32))
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, array in (("head_template", scaled), ("face_mask", (keep < 0.5).astype(np.uint8))):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(grid)
        path = target / f"{name}.nii.gz"
        sitk.WriteImage(image, str(path), useCompression=True)
        written.append(path)
    return written[0], written[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="pydeface's data folder (mean_reg2mean.nii.gz, facemask.nii.gz)")
    parser.add_argument("target", type=Path, help="where to write head_template.nii.gz and face_mask.nii.gz")
    arguments = parser.parse_args()
    for path in reduce(arguments.source, arguments.target):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
