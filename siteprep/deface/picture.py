"""The QA picture for the site administrator: before and after, from the side and from the front.

Both views are cut from the series resampled onto an axis-aligned 1.5 mm grid, so a sagittal or
coronal acquisition looks the same as an axial one: the side view through the middle of the face
(face to the left), the front view through the face itself (patient's right on the left, as
radiologists read). The "before" panels outline the removed region in red, so a glance shows
whether the cut follows the face. The picture shows the face it removes: it belongs to the site
and is written outside the output folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

DISPLAY_MM = 1.5
CT_WINDOW_HU = (-400.0, 400.0)  # skin, fat and muscle apart from air and bone


def _display_grid(image: sitk.Image) -> sitk.Image:
    size = np.array(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [float(end * (n - 1)) for end, n in zip(corner, size, strict=True)]
            )
            for corner in np.ndindex(2, 2, 2)
        ]
    )
    low, high = corners.min(axis=0), corners.max(axis=0)
    grid = sitk.Image([int(n) for n in np.ceil((high - low) / DISPLAY_MM) + 1], sitk.sitkFloat32)
    grid.SetSpacing([DISPLAY_MM] * 3)
    grid.SetOrigin([float(v) for v in low])
    return grid


def _on_grid(array: np.ndarray, like: sitk.Image, grid: sitk.Image, nearest: bool, fill: float) -> np.ndarray:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(like)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), interpolator, fill))


def write_qa_picture(series: sitk.Image, face: np.ndarray, air: float, modality: str, path: Path, title: str) -> Path:
    """Render ``series`` (modality units) before and after ``face`` (slices, rows, columns) is set to ``air``."""
    import matplotlib  # noqa: PLC0415  (the backend must be chosen before pyplot is imported)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    grid = _display_grid(series)
    before_array = sitk.GetArrayFromImage(series)
    before = _on_grid(before_array, series, grid, nearest=False, fill=air)
    after = _on_grid(np.where(face, air, before_array), series, grid, nearest=False, fill=air)
    removed = _on_grid(face, series, grid, nearest=True, fill=0.0) > 0.5
    _, y, x = (np.argwhere(removed).mean(axis=0) if removed.any() else np.array(removed.shape) / 2).astype(int)
    low, high = CT_WINDOW_HU if modality == "CT" else tuple(np.percentile(before_array, [1, 99.5]))
    views = (("side", np.s_[:, :, x]), ("front", np.s_[:, y, :]))
    figure, axes = plt.subplots(2, 2, figsize=(8, 8))
    for row, (view, cut) in enumerate(views):
        for column, (label, volume) in enumerate((("before", before), ("after", after))):
            ax = axes[row, column]
            ax.imshow(volume[cut], cmap="gray", vmin=low, vmax=high, origin="lower", interpolation="nearest")
            if label == "before" and removed[cut].any():
                ax.contour(removed[cut], levels=[0.5], colors="red", linewidths=0.8, origin="lower")
            ax.set_title(f"{label}, {view} view")
            ax.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
