"""Fit the head template to a series: SimpleITK, centred by moments, then rigid, then affine.

As pydeface does with FSL's flirt, the template (moving) is registered to the series (fixed)
with an affine transform, so the face mask follows the template onto the series' own grid and the
series itself is never resampled. Mattes mutual information compares the two, so an MR of any
weighting and a CT can be fitted to the T1-weighted template; a CT is seen through a window
(air to just above soft tissue) in which the outline of the head and face, what defacing depends
on, dominates as it does in the template, and the skull's own brightness does not.

Both images are smoothed and resampled to ``registration_mm`` (4 mm by default) first, and the
rigid stage runs at two resolutions: a series then takes a second or two on two cores, whatever
its own resolution. The random metric sampling is seeded, so a re-run gives the same fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from siteprep.deface.outcome import Quarantine, Reason
from siteprep.deface.template import HeadTemplate
from siteprep.series import LPS_TO_RAS

log = logging.getLogger(__name__)
CT_WINDOW_HU = (-1000.0, 150.0)
HISTOGRAM_BINS = 32
SAMPLED_FRACTION = 0.25
SAMPLING_SEED = 20260101
ITERATIONS = 150


@dataclass
class Fit:
    """The fitted template: ``transform`` maps points of the series onto the template (LPS, mm)."""

    transform: sitk.AffineTransform
    series: sitk.Image  # the series at registration resolution, as registered
    template: sitk.Image  # the template at registration resolution
    metric: float  # final Mattes mutual information (negative: lower is better)


def series_image(volume: np.ndarray, ras_affine: np.ndarray) -> sitk.Image:
    """A (slices, rows, columns) volume in modality units with its voxel-to-RAS affine, as an image.

    SimpleITK indexes (x = column, y = row, z = slice) in LPS patient coordinates, the DICOM ones,
    so the affine of :func:`siteprep.series.stack_slices` is turned back from RAS.
    """
    lps = LPS_TO_RAS @ ras_affine
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (axes / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return image


def registration_input(image: sitk.Image, modality: str) -> sitk.Image:
    """What the registration sees of a series: CT through :data:`CT_WINDOW_HU`, MR as it is."""
    if modality == "CT":
        return sitk.Clamp(image, sitk.sitkFloat32, *CT_WINDOW_HU)
    return image


def resampled(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` smoothed (against aliasing) and resampled to ``spacing_mm`` on its own orientation."""
    old_spacing = np.array(image.GetSpacing())
    size = np.maximum(np.round(np.array(image.GetSize()) * old_spacing / spacing_mm), 1).astype(int)
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint([-0.5 + 0.5 * spacing_mm / s for s in old_spacing]))
    smooth = sitk.SmoothingRecursiveGaussian(image, spacing_mm / 2)
    background = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, background, sitk.sitkFloat32)


def _run(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, shrink: list[int]) -> float:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLED_FRACTION, seed=SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=ITERATIONS, relaxationFactor=0.6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([2.0 * (factor - 1) for factor in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    log.debug("registration stage: %s", method.GetOptimizerStopConditionDescription())
    return float(method.GetMetricValue())


def fit_template(series: sitk.Image, modality: str, template: HeadTemplate, spacing_mm: float) -> Fit:
    """Register ``template`` to ``series``; an optimiser that gives up quarantines the series."""
    fixed = resampled(registration_input(series, modality), spacing_mm)
    moving = resampled(template.image, spacing_mm)
    try:
        rigid = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        _run(fixed, moving, rigid, [2, 1])
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        metric = _run(fixed, moving, affine, [1])
    except RuntimeError as error:  # ITK's exceptions, e.g. every sample mapped outside the template
        raise Quarantine(Reason.REGISTRATION_FAILED, str(error).strip().splitlines()[-1][:200]) from None
    return Fit(affine, fixed, moving, metric)
