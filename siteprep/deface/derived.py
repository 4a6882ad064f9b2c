"""A defaced slice as valid DICOM: a derived image of a new series that says what was done to it.

Per PS3.3 C.7.6.1 (General Image) and PS3.15 E.1.1: ImageType value 1 becomes DERIVED; the
derivation is described in words and with a code (CID 7203 "Image Processing"); SourceImageSequence
names the instance it was made from (CID 7202 "Source image for image processing operation");
DeidentificationMethodCodeSequence gains the Clean Recognizable Visual Features option (DCM
113102) and DeidentificationMethod says so. Everything else in the header stays as the
de-identified input had it.

New UIDs are 2.25 UIDs of name-based (SHA-1, version 5) UUIDs of the input's UIDs (PS3.5 B.2,
ISO/IEC 9834-8), so defacing the same series again gives the same UIDs and a re-run replaces its
earlier output instead of duplicating it. (pydicom's ``generate_uid`` ignores its entropy
sources under the 2.25 root and returns a random UUID.) A key is not needed: the
input UIDs are already the de-identifier's keyed ones, so hashing them reveals nothing new.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:insite:site-deface:v1")
CLEAN_VISUAL_FEATURES = codes.DCM.CleanRecognizableVisualFeaturesOption
IMAGE_PROCESSING = codes.DCM.ImageProcessing
SOURCE_FOR_PROCESSING = codes.DCM.SourceImageForImageProcessingOperation
DERIVATION = "Defaced: voxels under a registered head template's face mask set to air (insite, pydeface template)"
METHOD_TEXT = "Defaced DCM 113102"


def derived_uid(kind: str, uid: str) -> UID:
    """The UID a defaced ``kind`` ("series" or "instance") takes for input UID ``uid``."""
    return UID(f"2.25.{uuid.uuid5(UID_NAMESPACE, f'{kind}:{uid}').int}")


def _code_item(code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _stored_air(dataset: Dataset, air: float) -> int:
    """``air`` (modality units) as this slice stores it, clipped to what its bits can hold."""
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    bits = int(dataset.BitsStored)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dataset.PixelRepresentation else (0, 2**bits - 1)
    return int(np.clip(np.rint((air - intercept) / slope), low, high))


def _record_derivation(dataset: Dataset, source_class: str, source_instance: str) -> None:
    image_type = list(dataset.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    dataset.ImageType = ["DERIVED", *image_type[1:]]
    dataset.DerivationDescription = DERIVATION
    dataset.DerivationCodeSequence = [_code_item(IMAGE_PROCESSING)]
    source = Dataset()
    source.ReferencedSOPClassUID = source_class
    source.ReferencedSOPInstanceUID = source_instance
    source.PurposeOfReferenceCodeSequence = [_code_item(SOURCE_FOR_PROCESSING)]
    dataset.SourceImageSequence = [source]
    methods = list(dataset.get("DeidentificationMethodCodeSequence", []))
    if not any(item.get("CodeValue") == CLEAN_VISUAL_FEATURES.value for item in methods):
        dataset.DeidentificationMethodCodeSequence = [*methods, _code_item(CLEAN_VISUAL_FEATURES)]
    text = dataset.get("DeidentificationMethod")
    values = [] if text is None else ([text] if isinstance(text, str) else list(text))
    if METHOD_TEXT not in values:
        dataset.DeidentificationMethod = [*values, METHOD_TEXT]
    dataset.PatientIdentityRemoved = "YES"


def defaced_slice(path: Path, face: np.ndarray, air: float, series_uid: str) -> Dataset:
    """The file at ``path`` with the voxels under ``face`` (rows, columns) set to ``air``, as a new instance.

    Compressed pixel data is decoded and written uncompressed (Explicit VR Little Endian), so
    nothing of the face survives in a lossy re-encoding either.
    """
    dataset = dcmread(path)
    pixels = dataset.pixel_array.copy()
    pixels[face] = _stored_air(dataset, air)
    source_class, source_instance = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
    dataset.set_pixel_data(
        pixels, str(dataset.PhotometricInterpretation), int(dataset.BitsStored), generate_instance_uid=False
    )
    dataset.SOPInstanceUID = derived_uid("instance", source_instance)
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.SeriesInstanceUID = series_uid
    _record_derivation(dataset, source_class, source_instance)
    return dataset
