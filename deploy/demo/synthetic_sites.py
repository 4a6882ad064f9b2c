"""Synthetic hospital sites with non-IID data, for ``insite demo`` and the tests.

Each site's "scanner" differs (contrast, noise model, bias field, blur, gamma, raw intensity
units) and so does its lesion-size distribution, following the recipe measured in
``shared/notes/monai.md``: models trained at one site alone collapse on the others' scans, so the
federation has something to gain. Labels come from MONAI's ``create_test_image_3d`` (spheres);
images are a smooth textured background plus ``contrast`` x a lightly blurred lesion mask, passed
through the site's scanner chain. A site's volumes are written either training-ready in the layout
of :mod:`client.cases` (:func:`write_site`, for tests) or as the raw DICOM export a hospital starts
from (:func:`write_site_dicom`, for the demo, which de-identifies and ingests it like a real site).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data.synthetic import create_test_image_3d
from monai.transforms import GaussianSmooth

from client.cases import Case, write_index
from deploy.demo.synthetic_dicom import (
    PlantedPatient,
    fitted_rescale,
    random_patient,
    write_segmentation,
    write_series,
)


@dataclass(frozen=True)
class ScannerProfile:
    """How one synthetic site's images look. Units are those of the raw volume written to disk."""

    name: str
    lesions: int
    radius: tuple[int, int]
    contrast: float
    noise: float
    rician: bool = False
    bias: tuple[float, float] = (0.0, 0.0)
    blur: float = 0.6
    gamma: float = 1.0
    scale: float = 1000.0
    offset: float = 0.0
    modality: str = "MR"
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm, along the NIfTI axes (columns, rows, slices)


DEMO_SITES: tuple[ScannerProfile, ...] = (
    ScannerProfile("site-a", lesions=10, radius=(2, 5), contrast=0.8, noise=0.05, scale=1000.0),
    ScannerProfile(
        "site-b",
        lesions=3,
        radius=(7, 13),
        contrast=0.35,
        noise=0.12,
        rician=True,
        bias=(0.2, 0.4),
        blur=1.2,
        scale=1000.0,
        spacing=(0.9, 0.9, 2.0),
    ),
    ScannerProfile(
        "site-c",
        lesions=6,
        radius=(4, 8),
        contrast=0.5,
        noise=0.10,
        gamma=2.0,
        scale=4096.0,
        offset=-1024.0,
        modality="CT",
    ),
)


def _smooth(volume: np.ndarray, sigma: float) -> np.ndarray:
    smoothed = GaussianSmooth(sigma=sigma)(torch.from_numpy(volume[None].astype(np.float32)))
    return np.asarray(smoothed[0], dtype=np.float32)


def _bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field, like a receive-coil inhomogeneity (1 +- strength)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    field = sum((rng.uniform(-1, 1) * g + rng.uniform(-0.5, 0.5) * g**2 for g in grids), np.zeros(shape))
    field = field / max(float(np.abs(field).max()), 1e-6)
    return (1.0 + strength * field).astype(np.float32)


def synthesize_case(profile: ScannerProfile, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair of shape ``(size,)*3``: image float32 in raw units, label uint8 {0,1}."""
    _, seg = create_test_image_3d(
        size,
        size,
        size,
        num_objs=profile.lesions,
        rad_max=profile.radius[1],
        rad_min=profile.radius[0],
        noise_max=0.0,
        num_seg_classes=1,
        random_state=np.random.RandomState(int(rng.integers(2**31))),
    )
    label = (seg > 0).astype(np.uint8)
    background = _smooth(rng.normal(0.0, 1.0, label.shape), 2.0)
    background = 0.3 + 0.15 * background / max(float(background.std()), 1e-6)
    image = background + profile.contrast * _smooth(label.astype(np.float32), 0.7)
    image = _smooth(image, profile.blur)
    if profile.bias != (0.0, 0.0):
        image = image * _bias_field(label.shape, float(rng.uniform(*profile.bias)), rng)
    image = np.clip(image, 0.0, None)
    if profile.gamma != 1.0:
        peak = max(float(image.max()), 1e-6)
        image = peak * (image / peak) ** profile.gamma
    if profile.rician:
        real = image + rng.normal(0.0, profile.noise, image.shape)
        imag = rng.normal(0.0, profile.noise, image.shape)
        image = np.sqrt(real**2 + imag**2)
    else:
        image = image + rng.normal(0.0, profile.noise, image.shape)
    image = image * profile.scale + profile.offset
    return image.astype(np.float32), label


def _site_volumes(profile: ScannerProfile, count: int, size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The site's (image, label) pairs in order; the same seed gives the same volumes in any layout."""
    rng = np.random.default_rng(seed * 1000 + sum(profile.name.encode()))
    for _ in range(count):
        yield synthesize_case(profile, size, rng)


def write_site(
    profile: ScannerProfile,
    data_path: Path,
    train_cases: int,
    val_cases: int,
    size: int = 64,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> list[Case]:
    """Write one site's volumes as NIfTI plus ``cases.json``; returns the cases written."""
    (data_path / "images").mkdir(parents=True, exist_ok=True)
    (data_path / "labels").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*profile.spacing, 1.0])
    cases = []
    volumes = _site_volumes(profile, train_cases + val_cases, size, seed)
    for n, (image, label) in enumerate(volumes):
        case_id = f"{profile.name}-{n:03d}"
        image_path = data_path / "images" / f"{case_id}.nii.gz"
        label_path = data_path / "labels" / f"{case_id}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), image_path)
        nib.save(nib.Nifti1Image(label, affine), label_path)
        cases.append(Case(case_id, image_path, label_path, "train" if n < train_cases else "val", profile.modality))
        if progress:
            progress()
    write_index(data_path, cases)
    return cases


def write_site_dicom(
    profile: ScannerProfile,
    export: Path,
    cases: int,
    size: int = 64,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> list[PlantedPatient]:
    """Write one site's volumes as a raw PACS export: DICOM series + DICOM-SEG, full of identifiers.

    Each case is a made-up patient (:func:`deploy.demo.synthetic_dicom.random_patient`) whose name, IDs,
    dates, address, physicians and UIDs are planted in the headers, free text, nested sequences,
    a private block and, as PACS exports often do, the folder names. The volumes are those
    :func:`write_site` writes for the same seed, stored with a fitted rescale slope/intercept and
    laid out so that ``insite site ingest`` gives back the same voxel arrays. Returns the patients.
    """
    planted = random.Random(seed * 1000 + sum(profile.name.encode()))
    patients = []
    for image, label in _site_volumes(profile, cases, size, seed):
        patient = random_patient(planted)
        folder = export / f"{patient.name.replace('^', '_')}_{patient.patient_id}" / patient.study_date
        # write_series takes (slices, rows, columns); ingest returns (columns, rows, slices).
        slices = write_series(
            image.transpose(2, 1, 0),
            folder / "series1",
            patient,
            modality=profile.modality,
            spacing=profile.spacing[::-1],
            rescale=fitted_rescale(image),
        )
        write_segmentation(label.transpose(2, 1, 0), slices, folder / "seg" / "label.dcm", names={1: "lesion"})
        patients.append(patient)
        if progress:
            progress()
    return patients
