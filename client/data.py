"""A site's cases as MONAI datasets, with preprocessing cached on the site's disk.

Flower starts a fresh ClientApp process for every message, so anything computed in memory is
gone by the next round. The deterministic part of preprocessing (load, channel-first, intensity
normalisation, padding to the network's stride multiple) is therefore cached per case in
``cache_path`` with MONAI's :class:`~monai.data.PersistentDataset`; only random cropping and
flipping run each round. The cache key includes each file's size and modification time, so an
edited volume is preprocessed again instead of served stale.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, PersistentDataset
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    RandCropByPosNegLabeld,
    RandFlipd,
)
from nibabel.spatialimages import SpatialImage

from client.cases import Case, discover_cases
from common.errors import SiteDataError

# LoadImaged instantiates every image reader MONAI knows, including its GPU DICOM reader, which
# logs and warns in every process on a machine without nvImageCodec. The cases are NIfTI and
# that reader is never used: silence exactly those two messages, nothing else of MONAI's.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin", category=UserWarning)

KEYS = ("image", "label")
# Bump when the deterministic transforms change, so old caches are not reused.
PREPROCESSING_VERSION = "1"
# In the cache folder: each case's files' size and modification time when they last opened well.
READABLE_RECORD = "readable-cases.json"


def _preprocess(multiple: int) -> Compose:
    return Compose(
        [
            LoadImaged(keys=KEYS, image_only=True),
            EnsureChannelFirstd(keys=KEYS),
            NormalizeIntensityd(keys="image"),
            DivisiblePadd(keys=KEYS, k=multiple),
            EnsureTyped(keys=KEYS, dtype=(np.float32, np.uint8), track_meta=False),
        ]
    )


def _augment(patch_size: int) -> Compose:
    return Compose(
        [
            RandCropByPosNegLabeld(
                keys=KEYS,
                label_key="label",
                spatial_size=(patch_size,) * 3,
                pos=1,
                neg=1,
                num_samples=1,
                allow_smaller=True,
            ),
            RandFlipd(keys=KEYS, prob=0.5, spatial_axis=0),
            RandFlipd(keys=KEYS, prob=0.5, spatial_axis=1),
        ]
    )


def _stamp(case: Case) -> str:
    return "|".join(f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (case.image, case.label))


def _item(case: Case) -> dict[str, str]:
    return {
        "image": str(case.image),
        "label": str(case.label),
        "id": case.case_id,
        "stamp": _stamp(case) + f"|v{PREPROCESSING_VERSION}",
    }


def check_readable(site: str, case: Case) -> None:
    """Open both volumes' headers and compare grids: a broken file is named, not crashed on."""
    shapes = []
    for path in (case.image, case.label):
        try:
            # cast: nib.load is typed as returning the FileBasedImage base; a NIfTI volume is a SpatialImage
            shapes.append(cast(SpatialImage, nib.load(path)).shape)
        except Exception as error:  # nibabel raises several types for damaged files
            raise SiteDataError(f"site {site}: cannot read {path} ({error})") from None
    if shapes[0][:3] != shapes[1][:3]:
        raise SiteDataError(
            f"site {site}: case {case.case_id}: image {shapes[0]} and label {shapes[1]} differ in shape"
        )


def check_all_readable(site: str, cases: list[Case], cache_path: Path) -> None:
    """:func:`check_readable` for every case not unchanged since it last passed (``READABLE_RECORD``).

    Every message of a round opens the site's data anew; reading the headers of every volume each
    time costs ~5 ms a case (hundreds of cases: seconds, more on network storage) and tells nothing
    new about a file whose size and modification time are those it had when it opened well.
    """
    record = cache_path / READABLE_RECORD
    try:
        passed = json.loads(record.read_text())
    except (OSError, ValueError):
        passed = {}
    stamps = {}
    for case in cases:
        stamps[str(case.image)] = _stamp(case)
        if not isinstance(passed, dict) or passed.get(str(case.image)) != stamps[str(case.image)]:
            check_readable(site, case)
    if stamps != passed:
        cache_path.mkdir(parents=True, exist_ok=True)
        draft = record.with_name(f".{record.name}.{os.getpid()}")
        draft.write_text(json.dumps(stamps))
        os.replace(draft, record)


class SiteDataset:
    """The site's train and validation datasets; every case is checked before any is used."""

    def __init__(self, site: str, data_path: Path, cache_path: Path, multiple: int) -> None:
        self.site = site
        self.cases = discover_cases(site, data_path)
        check_all_readable(site, self.cases, cache_path)
        self.cache_dir = cache_path / "preprocessed"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._preprocess = _preprocess(multiple)
        self._seed = 0

    def split(self, name: str) -> list[Case]:
        return [c for c in self.cases if c.split == name]

    def _dataset(self, cases: list[Case], augment: Compose | None) -> PersistentDataset:
        # One flat Compose: PersistentDataset caches up to the first random transform at the top
        # level, and a nested Compose counts as random (it would cache the raw file paths).
        steps = list(self._preprocess.transforms) + (list(augment.transforms) if augment else [])
        transform = Compose(steps)
        if augment is not None:
            transform.set_random_state(seed=self._seed)
        try:
            return PersistentDataset([_item(c) for c in cases], transform=transform, cache_dir=self.cache_dir)
        except OSError as error:
            raise SiteDataError(f"site {self.site}: cannot use cache {self.cache_dir} ({error})") from None

    def train_loader(self, batch_size: int, patch_size: int, seed: int) -> DataLoader:
        self._seed = seed
        dataset = self._dataset(self.split("train"), _augment(patch_size))
        # Seeded shuffling too: a site's round is then reproducible from its inputs, which lets an
        # auditor (and the secure-aggregation test) recompute exactly what the site trained.
        order = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=False, generator=order)

    def val_dataset(self) -> PersistentDataset:
        return self._dataset(self.split("val"), None)

    def warm_cache(self) -> None:
        """Preprocess every case now (the first round would otherwise pay for it)."""
        for dataset in (self._dataset(self.split("train"), None), self.val_dataset()):
            for n in range(len(dataset)):
                _ = dataset[n]
