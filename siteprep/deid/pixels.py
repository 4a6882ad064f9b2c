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
annotation band of an US screen), and the file records Clean Pixel Data (113101). With
``burned_in_text.enabled``, OCR redaction (:mod:`siteprep.deid.text_redaction`) cleans what
this check flags instead of quarantining it; this module stays the gate that decides what needs it.
"""

from __future__ import annotations

import io
import math

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.tag import BaseTag
from pydicom.uid import UID

from siteprep.deid.elements import first_string, peek, raw_bytes, string_values
from siteprep.deid.reasons import Reason, Unsafe
from siteprep.deid.settings import PixelSafety

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
CAPTURE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture family (incl. multi-frame)
    "1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated PDF, CDA, STL, OBJ, MTL
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.68",  # Radiopharmaceutical Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.73",  # Patient Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.74",  # Planned Imaging Agent Administration SR
    "1.2.840.10008.5.1.4.1.1.88.75",  # Performed Imaging Agent Administration SR
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image (the ES modality's photographs)
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
)
SCANNED_CONVERSIONS = frozenset({"SD", "SI", "WSD", "DRW", "SYN"})  # PS3.3 C.8.6.1 Conversion Type
SCREEN_IMAGE_TYPES = frozenset({"SCREEN SHOT", "SCREENSHOT", "SCREEN CAPTURE", "CAPTURE"})
LABEL_MODALITIES = frozenset({"SEG", "RTSTRUCT"})  # labels have few levels by nature
SAMPLE_STRIDE = 4
PIXEL_DATA, IMAGE_TYPE = BaseTag(0x7FE00010), BaseTag(0x00080008)
PIXEL_TAGS = (PIXEL_DATA, BaseTag(0x7FE00008), BaseTag(0x7FE00009))  # the PIXEL_KEYWORDS; looked up by tag


def _has_pixels(dataset: Dataset) -> bool:
    return any(tag in dataset._dict for tag in PIXEL_TAGS)


def _pixel_bytes(dataset: Dataset) -> bytes:
    """PixelData's value; a raw element stays raw, so the writer copies it unconverted."""
    raw = raw_bytes(dataset, PIXEL_DATA)
    return raw if raw is not None else dataset.PixelData


def ultrasound_cleanable(dataset: Dataset, rules: PixelSafety) -> bool:
    """True when the site's US rule applies: US with calibrated regions to keep."""
    return (
        rules.blank_outside_ultrasound_regions
        and peek(dataset, "Modality") == "US"
        and bool(dataset.get("SequenceOfUltrasoundRegions"))
        and PIXEL_DATA in dataset._dict
    )


def _native_first_frame(dataset: Dataset) -> np.ndarray | None:
    """The first frame straight from uncompressed little-endian single-sample data, or None.

    Skips the general decoder's per-call setup, which costs more than the check itself on a
    typical CT/MR slice; anything else goes through :func:`pydicom.pixels.get_decoder`.
    """
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    bits = int(peek(dataset, "BitsAllocated", 0) or 0)
    if (
        syntax.is_compressed
        or not syntax.is_little_endian
        or bits not in (8, 16, 32)
        or int(peek(dataset, "SamplesPerPixel", 1) or 1) != 1
        or PIXEL_DATA not in dataset._dict
    ):
        return None
    dtype = np.dtype(f"{'i' if peek(dataset, 'PixelRepresentation') == 1 else 'u'}{bits // 8}").newbyteorder("<")
    rows, columns = int(peek(dataset, "Rows")), int(peek(dataset, "Columns"))
    data = _pixel_bytes(dataset)
    if len(data) < rows * columns * dtype.itemsize:
        raise Unsafe(
            Reason.TRUNCATED, f"pixel data holds {len(data)} bytes, one frame needs {rows * columns * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)


def _first_frame(dataset: Dataset) -> np.ndarray:
    try:
        native = _native_first_frame(dataset)
        if native is not None:
            return native
        if PIXEL_DATA not in dataset._dict:
            return dataset.pixel_array
        array, _ = get_decoder(UID(dataset.file_meta.TransferSyntaxUID)).as_array(dataset, index=0)
        return array
    except Unsafe:
        raise
    except Exception as error:  # any decoder failure means the pixels cannot be checked
        raise Unsafe(Reason.PIXEL_DATA_UNDECODABLE, f"{type(error).__name__}: {error}"[:200]) from None


_PLAIN_JPEG2000 = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_SIZ_FIRST_COMPONENT = 42  # SOC, SIZ, Lsiz, Rsiz, 8 image and tile sizes, Csiz (ISO 15444-1 A.5.1)


def _only_component(codestream: bytes) -> tuple[bool, int] | None:
    """(signed, precision) of a one-component JPEG 2000 codestream, from its SIZ segment, else None."""
    if (
        codestream[:4] != b"\xff\x4f\xff\x51"
        or len(codestream) <= _SIZ_FIRST_COMPONENT
        or int.from_bytes(codestream[_SIZ_FIRST_COMPONENT - 2 : _SIZ_FIRST_COMPONENT], "big") != 1
    ):
        return None
    ssiz = codestream[_SIZ_FIRST_COMPONENT]
    return bool(ssiz & 0x80), (ssiz & 0x7F) + 1


def _decode_reduced(codestream: bytes, levels: int) -> np.ndarray:
    from PIL import Image, Jpeg2KImagePlugin  # noqa: PLC0415  (only JPEG 2000 objects need it)

    with Image.open(io.BytesIO(codestream)) as image:
        if not isinstance(image, Jpeg2KImagePlugin.Jpeg2KImageFile):  # the plugin whose reduce is a level count
            raise OSError(f"not read as JPEG 2000 but as {image.format}")
        image.reduce = levels
        image.load()
        return np.asarray(image)


def _low_pass(codestream: bytes) -> np.ndarray | None:
    """The image at 1/SAMPLE_STRIDE of its edge: the low-pass level, else a finer level strided.

    Some codestreams do not decode at every level (pydicom's RG1_J2KR/J2KI fail at 1/4): the
    1/2 level, every second pixel, still costs a third of a full decode.
    """
    for levels in range(int(math.log2(SAMPLE_STRIDE)), 0, -1):
        step = SAMPLE_STRIDE >> levels
        try:
            return _decode_reduced(codestream, levels)[::step, ::step]
        except OSError:  # Pillow: "broken data stream" at this level
            continue
    return None


def _reduced_jpeg2000_sample(dataset: Dataset) -> np.ndarray | None:
    """The first frame of a single-channel JPEG 2000 image, decoded at 1/SAMPLE_STRIDE.

    JPEG 2000 stores resolution levels; decoding only the levels down to 1/SAMPLE_STRIDE of the
    edge (Pillow's ``reduce``) costs a tenth of a full decode and gives the low-pass image, whose
    grey levels and spread match a strided sample's closely (pydicom's JPEG 2000 test images:
    std within 2%, level counts within 3%, both well above the thresholds). Pillow offsets signed
    samples to unsigned, which changes neither; but signed pixels coded as unsigned samples are
    reinterpreted by pydicom, which only the full decode reproduces. Anything else, or any
    failure here, takes the full decode.
    """
    if (
        str(dataset.file_meta.TransferSyntaxUID) not in _PLAIN_JPEG2000
        or int(peek(dataset, "SamplesPerPixel", 1) or 1) != 1
        or PIXEL_DATA not in dataset._dict
    ):
        return None
    try:
        frames = int(peek(dataset, "NumberOfFrames", 1) or 1)
        frame = next(generate_frames(_pixel_bytes(dataset), number_of_frames=frames))
        component = _only_component(frame)
        if component is None or (peek(dataset, "PixelRepresentation", 0) != 0 and not component[0]):
            return None
        sample = _low_pass(frame)
    except Exception:
        return None
    expected = (-(-int(peek(dataset, "Rows")) // SAMPLE_STRIDE), -(-int(peek(dataset, "Columns")) // SAMPLE_STRIDE))
    if sample is None or sample.shape != expected:
        return None
    # Pillow widens samples of the codestream's precision to the full 8 or 16 bits: back to the
    # stored scale (as pydicom's decoder does), so the spread is compared in the stored units.
    bits, width = component[1], sample.dtype.itemsize * 8
    return sample / 2 ** (width - bits) if 0 < bits < width else sample


def _intensity_sample(dataset: Dataset) -> np.ndarray:
    """Every SAMPLE_STRIDE-th pixel of the first frame (or its JPEG 2000 low-pass equivalent)."""
    reduced = _reduced_jpeg2000_sample(dataset)
    if reduced is not None:
        return reduced
    return _first_frame(dataset)[::SAMPLE_STRIDE, ::SAMPLE_STRIDE]


def _distinct_levels(sample: np.ndarray) -> int:
    """How many distinct values ``sample`` holds.

    For integers a sort and a neighbour comparison, a quarter of :func:`numpy.unique`'s cost on
    a typical sample; floats go through :func:`numpy.unique`, which counts all NaNs as one level.
    """
    if sample.dtype.kind not in "iu" or not sample.size:
        return int(np.unique(sample).size)
    ordered = np.sort(sample, axis=None)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


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
    image_type = (
        {v.upper() for v in string_values(dataset, IMAGE_TYPE, "CS", None)} if IMAGE_TYPE in dataset._dict else set()
    )
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
        levels = _distinct_levels(sample)
        spread = float(sample.std()) if sample.size else 0.0
        if levels < rules.min_distinct_levels or spread < rules.min_intensity_std:
            raise Unsafe(
                Reason.LOW_INTENSITY_VARIANCE, f"{levels} grey levels, std {spread:.2f}: likely a picture of text"
            )
    return False


def decoded_frames(dataset: Dataset) -> np.ndarray:
    """Every frame's stored values, with a frame axis first: (frames, rows, columns[, samples]).

    Colour comes as RGB (the decoders convert YBR); palette colour stays indices, because
    cleaning changes stored values and the palette must still apply to them.
    """
    try:
        array = dataset.pixel_array
    except Exception as error:
        raise Unsafe(Reason.PIXEL_DATA_UNDECODABLE, f"{type(error).__name__}: {error}"[:200]) from None
    return array if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else array[np.newaxis]


def store_cleaned(dataset: Dataset, frames: np.ndarray) -> None:
    """Replace the pixel data by cleaned ``frames`` (as :func:`decoded_frames` gave them).

    Stored uncompressed (pydicom's :meth:`~pydicom.dataset.Dataset.set_pixel_data`): compressed
    pixel data becomes Explicit VR Little Endian (re-encoding a lossy syntax would alter the
    pixels a second time), uncompressed data keeps its transfer syntax; the file is written whole
    or not at all. BurnedInAnnotation becomes NO: callers clean first, then store. The SOP
    Instance UID is kept (pydicom would make a random one): the header step maps it with the site
    key like every UID, so references to the object from others stay valid and reruns agree.
    """
    photometric = dataset.PhotometricInterpretation
    if photometric.startswith("YBR"):  # the decoders return RGB for YBR data
        photometric = "RGB"
    try:
        dataset.set_pixel_data(
            frames if len(frames) > 1 else frames[0], photometric, int(dataset.BitsStored), generate_instance_uid=False
        )
    except (ValueError, NotImplementedError) as error:  # 32-bit samples, big-endian datasets: pydicom cannot
        raise Unsafe(Reason.WRITE_FAILED, f"cleaned pixel data cannot be stored: {error}"[:200]) from None
    dataset.BurnedInAnnotation = "NO"


def outside_ultrasound_regions(dataset: Dataset) -> np.ndarray | None:
    """(rows, columns) mask of the pixels outside every SequenceOfUltrasoundRegions item (PS3.3 C.8.5.5).

    None for anything but an US image with regions. Outside the calibrated regions an US screen
    shows only its annotation band: patient, operator, date, settings.
    """
    if peek(dataset, "Modality") != "US" or not dataset.get("SequenceOfUltrasoundRegions"):
        return None
    outside = np.ones((int(dataset.Rows), int(dataset.Columns)), dtype=bool)
    for region in dataset.SequenceOfUltrasoundRegions:
        outside[
            region.RegionLocationMinY0 : region.RegionLocationMaxY1 + 1,
            region.RegionLocationMinX0 : region.RegionLocationMaxX1 + 1,
        ] = False
    return outside


def blank_outside_ultrasound_regions(dataset: Dataset) -> None:
    """Zero every pixel outside the union of SequenceOfUltrasoundRegions, in every frame."""
    frames = decoded_frames(dataset)
    outside = outside_ultrasound_regions(dataset)
    if outside is not None:
        frames = frames.copy()
        frames[:, outside] = 0
    store_cleaned(dataset, frames)
