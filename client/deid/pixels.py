"""Burned-in identifiers: which objects are likely to carry them, and the one cleaning rule we apply.

PS3.15 E.1.1 leaves pixel data to the Clean Pixel Data option; the header profile cannot see text
written into pixels. Following seed 004 (burned-in text expected in ultrasound, secondary and
screen captures, scanned documents and dose reports) and seed 003 (drop images with low intensity
variance: usually pictures of text), an object is quarantined when

- BurnedInAnnotation (0028,0301) is YES;
- its SOP class is a capture, encapsulated document or radiation dose report;
- ConversionType (0008,0064) or ImageType says scanned or screen-captured;
- its Modality is one the site lists as risky (default US, OT, XC, ES, DOC, SC, GM, SM, XA, IO);
- its first frame has fewer than ``min_distinct_levels`` grey levels or a near-zero spread;

unless a cleaning rule covers it: with ``blank_outside_ultrasound_regions`` an US image with a
SequenceOfUltrasoundRegions has every pixel outside the calibrated regions set to zero (the
annotation band of an US screen), and the file records Clean Pixel Data (113101).
"""

from __future__ import annotations

import io
import math

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from client.deid.elements import first_string
from client.deid.reasons import Reason, Unsafe
from client.deid.settings import PixelSafety

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
CAPTURE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",       # Secondary Capture family (incl. multi-frame)
    "1.2.840.10008.5.1.4.1.1.104.",    # Encapsulated PDF, CDA, STL, OBJ, MTL
    "1.2.840.10008.5.1.4.1.1.88.67",   # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.68",   # Radiopharmaceutical Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.73",   # Patient Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.74",   # Planned Imaging Agent Administration SR
    "1.2.840.10008.5.1.4.1.1.88.75",   # Performed Imaging Agent Administration SR
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image (the ES modality's photographs)
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
)
SCANNED_CONVERSIONS = frozenset({"SD", "SI", "WSD", "DRW", "SYN"})  # PS3.3 C.8.6.1 Conversion Type
SCREEN_IMAGE_TYPES = frozenset({"SCREEN SHOT", "SCREENSHOT", "SCREEN CAPTURE", "CAPTURE"})
LABEL_MODALITIES = frozenset({"SEG", "RTSTRUCT"})  # labels have few levels by nature
SAMPLE_STRIDE = 4


def _has_pixels(dataset: Dataset) -> bool:
    return any(keyword in dataset for keyword in PIXEL_KEYWORDS)


def ultrasound_cleanable(dataset: Dataset, rules: PixelSafety) -> bool:
    """True when the site's US rule applies: US with calibrated regions to keep."""
    return (rules.blank_outside_ultrasound_regions and dataset.get("Modality") == "US"
            and bool(dataset.get("SequenceOfUltrasoundRegions")) and "PixelData" in dataset)


def _native_first_frame(dataset: Dataset) -> np.ndarray | None:
    """The first frame straight from uncompressed little-endian single-sample data, or None.

    Skips the general decoder's per-call setup, which costs more than the check itself on a
    typical CT/MR slice; anything else goes through :func:`pydicom.pixels.get_decoder`.
    """
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    bits = int(dataset.get("BitsAllocated", 0) or 0)
    if (syntax.is_compressed or not syntax.is_little_endian or bits not in (8, 16, 32)
            or int(dataset.get("SamplesPerPixel", 1) or 1) != 1 or "PixelData" not in dataset):
        return None
    dtype = np.dtype(f"{'i' if dataset.get('PixelRepresentation') == 1 else 'u'}{bits // 8}").newbyteorder("<")
    count = int(dataset.Rows) * int(dataset.Columns)
    data = dataset.PixelData
    if len(data) < count * dtype.itemsize:
        raise Unsafe(Reason.TRUNCATED, f"pixel data holds {len(data)} bytes, one frame needs {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(int(dataset.Rows), int(dataset.Columns))


def _first_frame(dataset: Dataset) -> np.ndarray:
    try:
        native = _native_first_frame(dataset)
        if native is not None:
            return native
        if "PixelData" not in dataset:
            return dataset.pixel_array
        array, _ = get_decoder(UID(dataset.file_meta.TransferSyntaxUID)).as_array(dataset, index=0)
        return array
    except Unsafe:
        raise
    except Exception as error:  # any decoder failure means the pixels cannot be checked
        raise Unsafe(Reason.PIXEL_DATA_UNDECODABLE, f"{type(error).__name__}: {error}"[:200]) from None


_PLAIN_JPEG2000 = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})


def _reduced_jpeg2000_sample(dataset: Dataset) -> np.ndarray | None:
    """The first frame of a single-channel unsigned JPEG 2000 image, decoded at 1/SAMPLE_STRIDE.

    JPEG 2000 stores resolution levels; decoding only the levels down to 1/SAMPLE_STRIDE of the
    edge (Pillow's ``reduce``) costs a tenth of a full decode and gives the low-pass image, whose
    grey levels and spread match a strided sample's closely (pydicom's JPEG 2000 test images:
    std within 2%, level counts within 3%, both well above the thresholds). Anything else, or any
    failure here, takes the full decode.
    """
    if (str(dataset.file_meta.TransferSyntaxUID) not in _PLAIN_JPEG2000
            or int(dataset.get("SamplesPerPixel", 1) or 1) != 1
            or dataset.get("PixelRepresentation", 0) != 0 or "PixelData" not in dataset):
        return None
    try:
        from PIL import Image  # noqa: PLC0415  (only JPEG 2000 objects need it)

        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        frame = next(generate_frames(dataset.PixelData, number_of_frames=frames))
        with Image.open(io.BytesIO(frame)) as image:
            image.reduce = int(math.log2(SAMPLE_STRIDE))
            image.load()
            sample = np.asarray(image)
    except Exception:  # noqa: BLE001  (the full decode below decides: it quarantines if it fails)
        return None
    expected = (-(-int(dataset.Rows) // SAMPLE_STRIDE), -(-int(dataset.Columns) // SAMPLE_STRIDE))
    if sample.shape != expected:
        return None
    # Pillow widens samples of fewer bits to the full 8 or 16: back to the stored scale, so the
    # spread is compared with the threshold in the stored units.
    bits = int(dataset.get("BitsStored", 0) or 0)
    width = sample.dtype.itemsize * 8
    return sample / 2 ** (width - bits) if 0 < bits < width else sample


def _intensity_sample(dataset: Dataset) -> np.ndarray:
    """Every SAMPLE_STRIDE-th pixel of the first frame (or its JPEG 2000 low-pass equivalent)."""
    reduced = _reduced_jpeg2000_sample(dataset)
    if reduced is not None:
        return reduced
    return _first_frame(dataset)[::SAMPLE_STRIDE, ::SAMPLE_STRIDE]


def check_burned_in_risk(dataset: Dataset, rules: PixelSafety) -> bool:
    """Raise :class:`Unsafe` for a likely carrier of burned-in identifiers.

    Returns True when the object may pass only after :func:`blank_outside_ultrasound_regions`.
    """
    if first_string(dataset, "BurnedInAnnotation").upper() == "YES":
        raise Unsafe(Reason.BURNED_IN_ANNOTATION, "BurnedInAnnotation (0028,0301) is YES")
    sop_class = first_string(dataset, "SOPClassUID")
    if sop_class.startswith(CAPTURE_PREFIXES):
        raise Unsafe(Reason.RISKY_SOP_CLASS, f"SOP class {sop_class} ({UID(sop_class).name})")
    conversion = first_string(dataset, "ConversionType").upper()
    if conversion in SCANNED_CONVERSIONS:
        raise Unsafe(Reason.SCANNED_OR_CAPTURED, f"ConversionType {conversion}")
    image_type = {str(v).upper() for v in (dataset.get("ImageType") or [])}
    if image_type & SCREEN_IMAGE_TYPES:
        raise Unsafe(Reason.SCANNED_OR_CAPTURED, f"ImageType {sorted(image_type & SCREEN_IMAGE_TYPES)}")
    if not _has_pixels(dataset):
        return False
    modality = first_string(dataset, "Modality").upper()
    if modality in rules.risky_modalities:
        if ultrasound_cleanable(dataset, rules):
            return True
        raise Unsafe(Reason.RISKY_MODALITY, f"modality {modality} usually carries burned-in text")
    if modality not in LABEL_MODALITIES:
        sample = _intensity_sample(dataset)
        levels = np.unique(sample).size
        spread = float(sample.std()) if sample.size else 0.0
        if levels < rules.min_distinct_levels or spread < rules.min_intensity_std:
            raise Unsafe(Reason.LOW_INTENSITY_VARIANCE,
                         f"{levels} grey levels, std {spread:.2f}: likely a picture of text")
    return False


def blank_outside_ultrasound_regions(dataset: Dataset) -> None:
    """Zero every pixel outside the union of SequenceOfUltrasoundRegions (PS3.3 C.8.5.5).

    The result is stored uncompressed (Explicit VR Little Endian) with BurnedInAnnotation NO.
    """
    try:
        frames = dataset.pixel_array
    except Exception as error:
        raise Unsafe(Reason.PIXEL_DATA_UNDECODABLE, f"{type(error).__name__}: {error}"[:200]) from None
    frame_axis = 1 if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else 0
    rows, columns = frames.shape[frame_axis], frames.shape[frame_axis + 1]
    keep = np.zeros((rows, columns), dtype=bool)
    for region in dataset.SequenceOfUltrasoundRegions:
        keep[region.RegionLocationMinY0:region.RegionLocationMaxY1 + 1,
             region.RegionLocationMinX0:region.RegionLocationMaxX1 + 1] = True
    shape = [1] * frames.ndim
    shape[frame_axis], shape[frame_axis + 1] = rows, columns
    cleaned = np.where(keep.reshape(shape), frames, 0).astype(frames.dtype)
    photometric = dataset.PhotometricInterpretation
    if photometric.startswith("YBR"):  # the decoders return RGB for YBR JPEG data
        photometric = "RGB"
    dataset.set_pixel_data(cleaned, photometric, int(dataset.BitsStored))
    dataset.BurnedInAnnotation = "NO"
