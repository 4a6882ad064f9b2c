"""Raw DICOM with identifiers burned into the pixels, for the tests and the benchmark of OCR redaction.

Ultrasound machines and screen-capture software draw the patient's name, ID and dates into the
image itself: in the corners, in a band above the calibrated regions, sometimes over the anatomy.
:func:`write_annotated` writes such an object the way a scanner does (US or Secondary Capture SOP
class, full patient and study header, BurnedInAnnotation YES, SequenceOfUltrasoundRegions for
US, JPEG baseline YBR_FULL_422 when asked) and returns which pixels the text covers, so a test
can prove the text is gone and the rest untouched. :func:`read_plainly` is the second reader
those checks use: tesseract on the plain display, independent of the redactor's own rendering.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import pytesseract
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut
from pydicom.uid import (
    UID,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from deploy.demo.synthetic_dicom import PlantedPatient, new_instance

FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf")  # shipped with matplotlib
Kind = Literal["grey8", "grey16", "rgb", "rgb-jpeg"]
MAX_STORED_16 = 4095  # 12 bits stored, as most scanners write


@dataclass(frozen=True)
class Label:
    """A line of text drawn into the image at (row, column), top left, ``size`` pixels high."""

    text: str
    row: int
    column: int
    size: int = 18
    font: str = FONTS[0]
    colour: tuple[int, int, int] = (255, 255, 255)  # display colour; grey images use its brightest sample


@dataclass(frozen=True)
class Region:
    """An ultrasound region (PS3.3 C.8.5.5): rows and columns, inclusive, as SequenceOfUltrasoundRegions gives them."""

    top: int
    left: int
    bottom: int
    right: int


@dataclass
class Annotated:
    """What :func:`write_annotated` wrote: the file, its stored frames, and where the text is."""

    path: Path
    text: np.ndarray  # (rows, columns) bool: pixels any frame's text covers
    labels: list[Label] = field(default_factory=list)


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def label_box(label: Label) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the label's ink in the image; bottom and right exclusive."""
    left, top, right, bottom = (int(v) for v in _font(label.font, label.size).getbbox(label.text))
    return label.row + top, label.column + left, label.row + bottom, label.column + right


def label_lines(patient: PlantedPatient) -> list[str]:
    """What an ultrasound screen prints of its patient: name, ID, birth and study dates."""
    family, given = patient.name.split("^")
    birth, study = patient.birth_date, patient.study_date
    return [
        f"{family}, {given}",
        f"ID {patient.patient_id}",
        f"DOB {birth[6:8]}/{birth[4:6]}/{birth[0:4]}",
        f"{study[0:4]}-{study[4:6]}-{study[6:8]}",
    ]


def anatomy(rows: int, columns: int, seed: int, frames: int = 1) -> np.ndarray:
    """(frames, rows, columns) in [0, 0.55]: speckle over a few soft organs that drift from frame to frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    organs = [(rng.uniform(0.3, 0.7) * rows, rng.uniform(0.3, 0.7) * columns, rng.uniform(0.1, 0.25)) for _ in range(3)]
    out = np.empty((frames, rows, columns))
    for index in range(frames):
        body = np.zeros((rows, columns))
        for row, column, radius in organs:
            distance = np.hypot((y - row - 2 * index) / rows, (x - column) / columns)
            body += 0.35 * np.exp(-((distance / radius) ** 2))
        out[index] = np.clip(body + rng.normal(0.15, 0.06, (rows, columns)), 0, 0.55)
    return out


def _coverage(labels: Sequence[Label], rows: int, columns: int) -> np.ndarray:
    """(rows, columns) in [0, 1]: how much of each pixel the labels' anti-aliased glyphs cover."""
    mask = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(mask)
    for label in labels:
        draw.text((label.column, label.row), label.text, fill=255, font=_font(label.font, label.size))
    return np.asarray(mask, dtype=np.float64) / 255


def _painted(base: np.ndarray, frame_labels: Sequence[Sequence[Label]], colour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Display values in [0, 1] ((frames, rows, columns[, 3])) with each frame's labels drawn, and the text mask."""
    frames, rows, columns = base.shape
    image = np.repeat(base[..., np.newaxis], 3, axis=-1) * (1.0, 0.9, 0.8) if colour else base.copy()
    text = np.zeros((rows, columns), dtype=bool)
    for index, labels in enumerate(frame_labels):
        for label in labels:
            cover = _coverage([label], rows, columns)
            text |= cover > 0
            ink = np.asarray(label.colour, dtype=np.float64) / 255
            if colour:
                image[index] = image[index] * (1 - cover[..., np.newaxis]) + cover[..., np.newaxis] * ink
            else:
                image[index] = image[index] * (1 - cover) + cover * ink.max()
    return image, text


def _header(patient: PlantedPatient, sop_class: UID, modality: str) -> Dataset:
    ds = new_instance(sop_class, patient)
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if modality == "US" else ["DERIVED", "SECONDARY"]
    ds.Modality = modality
    if modality != "US":
        ds.ConversionType = "WSD"  # workstation: a screen capture
    ds.ContentTime = "101500"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES"  # what a scanner that draws text into the pixels says
    return ds


def _ultrasound_regions(ds: Dataset, regions: Sequence[Region]) -> None:
    items = []
    for region in regions:
        item = Dataset()
        item.RegionSpatialFormat = 1  # 2D
        item.RegionDataType = 1  # tissue
        item.RegionFlags = 0
        item.RegionLocationMinX0, item.RegionLocationMinY0 = region.left, region.top
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = region.right, region.bottom
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
        item.PhysicalDeltaX = item.PhysicalDeltaY = 0.02
        items.append(item)
    ds.SequenceOfUltrasoundRegions = items


def _store(ds: Dataset, display: np.ndarray, kind: Kind) -> None:
    frames = len(display)
    if kind == "grey16":
        stored: np.ndarray = np.rint(display * MAX_STORED_16).astype(np.uint16)
        ds.set_pixel_data(stored if frames > 1 else stored[0], "MONOCHROME2", 12)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.WindowCenter, ds.WindowWidth = "1500", "3400"  # text (4095) lies above the window: shown white
        return
    stored = np.rint(display * 255).astype(np.uint8)
    if kind == "grey8":
        ds.set_pixel_data(stored if frames > 1 else stored[0], "MONOCHROME2", 8)
    elif kind == "rgb":
        ds.set_pixel_data(stored if frames > 1 else stored[0], "RGB", 8)
    else:  # JPEG baseline, 4:2:2 chroma, as ultrasound machines export
        ds.set_pixel_data(stored if frames > 1 else stored[0], "RGB", 8)
        encoded = []
        for frame in stored:
            buffer = io.BytesIO()
            Image.fromarray(frame, "RGB").save(buffer, format="JPEG", quality=95, subsampling=1)
            encoded.append(buffer.getvalue())
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def write_annotated(
    path: Path,
    patient: PlantedPatient,
    frame_labels: Sequence[Sequence[Label]],
    *,
    kind: Kind = "grey8",
    modality: str = "US",
    rows: int = 192,
    columns: int = 256,
    regions: Sequence[Region] = (),
    seed: int = 0,
) -> Annotated:
    """Write one object with ``frame_labels[i]`` drawn into frame i (a cine when there are several).

    US objects get the US (multi-frame) SOP class and ``regions``; anything else is a Secondary
    Capture (modality ``modality``, e.g. SC or OT).
    """
    frames = len(frame_labels)
    base = anatomy(rows, columns, seed, frames)
    display, text = _painted(base, frame_labels, kind.startswith("rgb"))
    if modality == "US":
        ds = _header(patient, UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage, "US")
        if regions:
            _ultrasound_regions(ds, regions)
    else:
        ds = _header(patient, SecondaryCaptureImageStorage, modality)
    _store(ds, display, kind)
    if frames > 1:
        ds.FrameTime = 40.0
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Annotated(path, text, [label for labels in frame_labels for label in labels])


def _words(text: str) -> list[str]:
    return [w for w in ("".join(c for c in part if c.isalnum()).upper() for part in text.split()) if len(w) >= 4]


def planted_words(lines: Sequence[str]) -> set[str]:
    """The burned-in words of at least 4 letters or digits, upper case, as OCR output is compared with them."""
    return {word for line in lines for word in _words(line)}


def read_plainly(dataset: Dataset) -> list[str]:
    """Words of 4+ letters or digits tesseract reads on every frame shown plainly: VOI LUT, colour as
    luminance, stretched to 8 bits, enlarged 3x, no thresholding (psm 11)."""
    frames = dataset.pixel_array if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else dataset.pixel_array[None]
    words = []
    for frame in frames:
        shown = np.asarray(frame if frame.ndim == 3 else apply_voi_lut(frame, dataset), dtype=np.float64)
        shown = (255 * (shown - shown.min()) / max(1.0, float(shown.max() - shown.min()))).astype(np.uint8)
        image = Image.fromarray(shown).convert("L")  # colour as its luminance (ITU-R 601)
        image = image.resize((image.width * 3, image.height * 3), Image.Resampling.LANCZOS)
        words += _words(" ".join(pytesseract.image_to_data(image, config="--psm 11", output_type="dict")["text"]))
    return words


def found(words: Sequence[str], planted: set[str]) -> set[str]:
    """The planted words that ``words`` hold, or are pieces of."""
    return {p for p in planted for w in words if p in w or w in p}
