"""Reading burned-in text: a display rendering of a frame, and the words tesseract finds in it.

Burned-in annotation is drawn to be read on a display, so the OCR reads what a display shows:
the Modality LUT and VOI LUT applied (palette colour through its LUT; colour as the brightest
of its samples, so yellow or cyan text is as bright as white), scaled to 8 bits over the range
of the original frames (fixed once per object, so a frame whose text was filled is shown on the
same scale as before). Annotation is drawn at the ends of the display range, far from tissue
grey; tesseract's own thresholding, tried on noisy images, reads speckle as letters, so the
rendering is thresholded first (:data:`TEXT_LEVEL`) into dark words on a white page, and
upscaled so that small text reaches the 20-30 pixel height tesseract reads best.

Tesseract runs per frame as a subprocess (pytesseract), with page segmentation mode 11 (sparse
text: words anywhere, in no order), one process at a time per caller, the same words for the
same pixels.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import pytesseract
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from siteprep.deid.reasons import Reason, Unsafe

TESSERACT_HINT = "install Debian's tesseract-ocr ('make system-deps' as root, or apt-get install tesseract-ocr)"
TESSERACT_CONFIG = "--psm 11"  # sparse text: annotation sits in corners and bands, not in paragraphs
TESSERACT_TIMEOUT_S = 120  # a frame tesseract cannot read in this time is a failure, not a hang
TEXT_LEVEL = 0.75  # bright text: at least this far up the display range (dark text: this far down)
UPSCALED_SIDE = 1600  # small frames are enlarged by a whole factor towards this longer side...
MAX_UPSCALE = 3  # ...at most this much (tesseract's time grows with the pixel count)


def alphanumerics(text: str) -> str:
    """The letters and digits of ``text``, upper case: how words are compared with identifiers and allowed words."""
    return "".join(c for c in text if c.isalnum()).upper()


@dataclass(frozen=True)
class Box:
    """A rectangle in stored-pixel coordinates; ``bottom`` and ``right`` are exclusive."""

    top: int
    left: int
    bottom: int
    right: int


@dataclass(frozen=True)
class Word:
    """One word tesseract read: its text, its confidence (0-100) and where it is."""

    text: str
    confidence: float
    box: Box

    @property
    def letters(self) -> str:
        return alphanumerics(self.text)


def tesseract_path() -> str | None:
    """Where the tesseract executable is, or None when it is not installed."""
    return shutil.which(pytesseract.pytesseract.tesseract_cmd)


def require_tesseract() -> None:
    """Raise :class:`Unsafe` (``ocr_unavailable``) when tesseract is not installed."""
    if tesseract_path() is None:
        raise Unsafe(Reason.OCR_UNAVAILABLE, f"burned-in text redaction needs tesseract: {TESSERACT_HINT}")


class DisplayRendering:
    """Frames of one object as a display shows them, on the 8-bit scale of its original frames.

    Made from the original frames; applied to their cleaned versions too, so that filling the
    text changes neither the scale nor whether text is taken to be bright.
    """

    def __init__(self, dataset: Dataset, frames: np.ndarray, first_read: int) -> None:
        self.dataset = dataset
        self.photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
        self.low, self.high = self._display_range(frames)
        # dark text on a light page (documents, screen captures) when most of the first frame read is light
        self.dark_text = bool(np.median(self._scaled(self._display_values(frames[first_read : first_read + 1]))) >= 128)

    def _display_range(self, frames: np.ndarray) -> tuple[float, float]:
        """What the lowest and highest stored values of all frames look like on a display.

        From the stored extremes only: the display transforms are monotonic (but a palette), and
        this costs no display rendering of every frame of a long cine.
        """
        low, high = int(frames.min()), int(frames.max())
        if frames.ndim == 4:
            return float(low), float(high)
        probe = np.arange(low, high + 1) if self.photometric == "PALETTE COLOR" else np.array([low, high])
        shown = self._display_values(probe.astype(frames.dtype).reshape(1, 1, -1))
        return float(shown.min()), float(shown.max())

    def _display_values(self, frames: np.ndarray) -> np.ndarray:
        if self.photometric == "PALETTE COLOR":
            return np.asarray(apply_color_lut(frames, self.dataset)).max(axis=-1)
        if frames.ndim == 4:  # (frames, rows, columns, samples): colour
            return frames.max(axis=-1)
        display = np.asarray(apply_voi_lut(apply_modality_lut(frames, self.dataset), self.dataset), dtype=np.float64)
        return -display if self.photometric == "MONOCHROME1" else display

    def _scaled(self, display: np.ndarray) -> np.ndarray:
        span = self.high - self.low
        if span <= 0:
            return np.zeros(display.shape, dtype=np.uint8)
        return np.clip((display - self.low) * (255.0 / span), 0, 255).astype(np.uint8)

    def page(self, frame: np.ndarray) -> np.ndarray:
        """One frame as the page tesseract reads: text pixels black (0), everything else white (255)."""
        scaled = self._scaled(self._display_values(frame[np.newaxis])[0])
        text = scaled <= 255 * (1 - TEXT_LEVEL) if self.dark_text else scaled >= 255 * TEXT_LEVEL
        return np.where(text, 0, 255).astype(np.uint8)


def upscale_factor(rows: int, columns: int) -> int:
    """The whole factor a frame is enlarged by before OCR: 3 for 100-533 px, 2 up to 800 px, then 1."""
    return max(1, min(MAX_UPSCALE, UPSCALED_SIDE // max(rows, columns, 1)))


def read_words(page: np.ndarray) -> list[Word]:
    """Every word tesseract reads on ``page`` (from :meth:`DisplayRendering.page`), boxed in stored pixels.

    A page with no text pixel at all is not sent to tesseract: it can hold no word.
    """
    if page.min() == 255:
        return []
    rows, columns = page.shape
    factor = upscale_factor(rows, columns)
    image = Image.fromarray(page)
    if factor > 1:
        image = image.resize((columns * factor, rows * factor), Image.Resampling.BILINEAR)
    try:
        found = pytesseract.image_to_data(
            image, config=TESSERACT_CONFIG, output_type=pytesseract.Output.DICT, timeout=TESSERACT_TIMEOUT_S
        )
    except pytesseract.TesseractNotFoundError:
        raise Unsafe(Reason.OCR_UNAVAILABLE, f"tesseract is not installed: {TESSERACT_HINT}") from None
    except (pytesseract.TesseractError, RuntimeError, OSError) as error:  # RuntimeError: the timeout
        raise Unsafe(Reason.OCR_FAILED, f"tesseract: {type(error).__name__}: {error}"[:200]) from None
    words = []
    for text, confidence, left, top, width, height in zip(
        found["text"], found["conf"], found["left"], found["top"], found["width"], found["height"], strict=True
    ):
        if not str(text).strip():
            continue
        box = Box(
            top=int(top) // factor,
            left=int(left) // factor,
            bottom=min(rows, -(-(int(top) + int(height)) // factor)),
            right=min(columns, -(-(int(left) + int(width)) // factor)),
        )
        words.append(Word(str(text), float(confidence), box))
    return words
