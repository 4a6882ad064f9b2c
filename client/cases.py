"""The training-ready layout of a site's data folder, shared by ingest, QA and training.

A site's ``data_path`` holds::

    cases.json            the case index (written by ``insite site ingest`` or the demo generator)
    images/<case>.nii.gz  one 3D image volume per case
    labels/<case>.nii.gz  its label volume (0 = background, 1..n = classes), same grid

``cases.json`` is ``{"cases": [{"id": ..., "image": ..., "label": ..., "split": "train"|"val"}]}``
with paths relative to the folder; an entry may add ``"modality"`` (the DICOM Modality of the
series, e.g. ``"CT"``), which ingest records and an older index lacks (``"unknown"``). Without an
index the folder is scanned: every image needs a label of the same name. Validation cases are held
out of training and used to report Dice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.errors import SiteDataError

INDEX_NAME = "cases.json"
Split = Literal["train", "val"]
VOLUME_SUFFIXES = (".nii.gz", ".nii")
UNKNOWN_MODALITY = "unknown"


@dataclass(frozen=True)
class Case:
    """One image/label pair; paths are absolute."""

    case_id: str
    image: Path
    label: Path
    split: Split
    modality: str = UNKNOWN_MODALITY


def _stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def write_index(data_path: Path, cases: list[Case]) -> Path:
    """Write ``cases.json`` with paths relative to ``data_path``."""
    entries = [
        {
            "id": case.case_id,
            "image": str(case.image.relative_to(data_path)),
            "label": str(case.label.relative_to(data_path)),
            "split": case.split,
            **({"modality": case.modality} if case.modality != UNKNOWN_MODALITY else {}),
        }
        for case in cases
    ]
    index = data_path / INDEX_NAME
    index.write_text(json.dumps({"cases": entries}, indent=1) + "\n", encoding="utf-8")
    return index


def _read_index(site: str, data_path: Path) -> list[Case]:
    index = data_path / INDEX_NAME
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))["cases"]
        cases = [
            Case(
                str(e["id"]),
                data_path / e["image"],
                data_path / e["label"],
                e.get("split", "train"),
                str(e.get("modality", UNKNOWN_MODALITY)),
            )
            for e in entries
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SiteDataError(f"site {site}: case index {index} is malformed ({error})") from None
    for case in cases:
        if case.split not in ("train", "val"):
            raise SiteDataError(f"site {site}: case {case.case_id} in {index} has split '{case.split}'")
    return cases


def _scan_folder(site: str, data_path: Path) -> list[Case]:
    images = sorted(p for p in (data_path / "images").glob("*") if p.name.endswith(VOLUME_SUFFIXES))
    cases = []
    for n, image in enumerate(images):
        stem = _stem(image)
        label = next(
            (
                data_path / "labels" / f"{stem}{s}"
                for s in VOLUME_SUFFIXES
                if (data_path / "labels" / f"{stem}{s}").exists()
            ),
            None,
        )
        if label is None:
            raise SiteDataError(f"site {site}: image {image} has no label in {data_path / 'labels'}")
        # Every fifth case is held out, so a folder without an index still gets a validation split.
        cases.append(Case(stem, image, label, "val" if n % 5 == 4 else "train"))
    return cases


def discover_cases(site: str, data_path: Path) -> list[Case]:
    """The site's cases, checked to exist; raises :class:`SiteDataError` naming site and file."""
    if not data_path.is_dir():
        raise SiteDataError(f"site {site}: data folder {data_path} does not exist")
    if (data_path / INDEX_NAME).exists():
        cases = _read_index(site, data_path)
    else:
        cases = _scan_folder(site, data_path)
    if not cases:
        raise SiteDataError(
            f"site {site}: data folder {data_path} holds no cases "
            f"(expected {INDEX_NAME} or images/*.nii.gz with labels/*.nii.gz)"
        )
    for case in cases:
        for path in (case.image, case.label):
            if not path.is_file():
                raise SiteDataError(f"site {site}: case {case.case_id}: file {path} is missing")
    if not any(c.split == "train" for c in cases):
        raise SiteDataError(f"site {site}: data folder {data_path} has no training cases")
    return cases
