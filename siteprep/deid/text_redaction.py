"""Clean burned-in text from an object the pixel check flags: find it, fill it, prove it is gone.

With ``[deid.pixels.burned_in_text] enabled``, an object that :func:`~siteprep.deid.pixels.check_burned_in_risk`
would quarantine is cleaned instead (:func:`redaction_applies` says which), in this order, all on
a copy of the decoded pixels, so a failure at any step leaves the object as it was (and
quarantined):

1. an US image with SequenceOfUltrasoundRegions: every pixel outside the regions is filled
   (that band holds the screen's annotation);
2. the frames to read (:func:`frames_to_read`) are OCR'd on a display rendering
   (:mod:`siteprep.deid.burned_in_text`); every word the :class:`~siteprep.deid.text_policy.TextPolicy`
   redacts is boxed, the box padded by ``padding`` pixels;
3. the union of the boxes of all frames read is filled in every frame: burned-in annotation
   is drawn by the scanner at fixed places, so text found in one frame of a cine is where the
   others show it too. More than ``max_redacted_fraction`` of a frame under text is a document
   or a picture of text, which filling would only blank: it stays quarantined;
4. verification: the frames read, and the frames halfway between them (a cine's text that is
   not static shows there), are OCR'd again; any word the policy says remains keeps the object
   quarantined (``burned_in_text_remains``; the detail gives counts and places, never the text);
5. only then the cleaned pixels replace the original ones, uncompressed (compressed objects
   become Explicit VR Little Endian, :func:`~siteprep.deid.pixels.store_cleaned`),
   BurnedInAnnotation becomes NO, and the caller records Clean Pixel Data (DCM 113101).

Pixels are filled with the value a display shows black (the lowest stored value, the highest for
MONOCHROME1, zero for colour); palette colour is cleaned in its stored indices. Nothing outside
the filled boxes (and, for US, the area outside the regions) changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from siteprep.deid.burned_in_text import Box, DisplayRendering, read_words, require_tesseract
from siteprep.deid.elements import first_string
from siteprep.deid.pixels import (
    CAPTURE_PREFIXES,
    PIXEL_DATA,
    decoded_frames,
    outside_ultrasound_regions,
    store_cleaned,
)
from siteprep.deid.reasons import Reason, Unsafe
from siteprep.deid.settings import BurnedInText
from siteprep.deid.text_policy import TextPolicy

log = logging.getLogger(__name__)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # the one capture family whose pixels OCR can clean
COLOUR_PHOTOMETRICS = ("RGB", "YBR", "PALETTE COLOR")  # PS3.3 C.7.6.3.1.2; the rest are MONOCHROME1/2
# What the pixel check says of an object that OCR can make safe; the others (a truncated file,
# undecodable pixels) are no matter of text.
CLEANABLE_RISKS = frozenset(
    {
        Reason.BURNED_IN_ANNOTATION,
        Reason.RISKY_MODALITY,
        Reason.RISKY_SOP_CLASS,
        Reason.SCANNED_OR_CAPTURED,
        Reason.LOW_INTENSITY_VARIANCE,
    }
)
MAX_PLACES = 3  # places named in a quarantine detail


@dataclass(frozen=True)
class Redaction:
    """What cleaning one object did, for the log and the benchmark."""

    frames: int  # frames in the object
    frames_read: int  # OCR runs, finding and verifying
    boxes: int  # words filled
    filled_fraction: float  # of a frame, by the text boxes (the US band not counted)


def redaction_applies(dataset: Dataset, risk: Reason, rules: BurnedInText) -> bool:
    """Whether an object flagged for ``risk`` is cleaned by OCR instead of quarantined.

    Not photographs and documents of other SOP classes (VL photographs, encapsulated PDF, dose
    reports: faces or no image), not objects that say they show recognisable features, not the
    site's ``keep_quarantined_modalities``, not colour objects other than ultrasound unless the
    site allows them (a photograph or a 3D rendering may show a face, and OCR cannot see one),
    and only objects with integer pixel data.
    """
    sop_class = first_string(dataset, "SOPClassUID")
    modality = first_string(dataset, "Modality").upper()
    colour = first_string(dataset, "PhotometricInterpretation").upper().startswith(COLOUR_PHOTOMETRICS)
    return (
        rules.enabled
        and risk in CLEANABLE_RISKS
        and PIXEL_DATA in dataset._dict
        and (not sop_class.startswith(CAPTURE_PREFIXES) or sop_class.startswith(SECONDARY_CAPTURE))
        and first_string(dataset, "RecognizableVisualFeatures").upper() != "YES"
        and modality not in rules.keep_quarantined_modalities
        and (not colour or modality == "US" or rules.clean_colour_captures)
    )


def frames_to_read(count: int, wanted: int) -> list[int]:
    """Indices of ``wanted`` frames evenly spaced from the first to the last (all, if no more)."""
    if count <= wanted:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, wanted).round()})


def frames_to_verify(read: list[int]) -> list[int]:
    """The frames read, and the frame halfway between each two neighbours among them."""
    between = {(a + b) // 2 for a, b in zip(read, read[1:], strict=False)}
    return sorted(set(read) | between)


def _black(dataset: Dataset, frames: np.ndarray) -> int:
    """The stored value a display shows black."""
    if frames.ndim == 4:
        return 0
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        return int(frames.max())
    return int(frames.min())


def _padded(boxes: Iterable[Box], padding: int, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[max(0, box.top - padding) : box.bottom + padding, max(0, box.left - padding) : box.right + padding] = True
    return mask


def _place(frame: int, box: Box) -> str:
    return f"frame {frame + 1} rows {box.top}-{box.bottom - 1} columns {box.left}-{box.right - 1}"


def redact_burned_in_text(dataset: Dataset, rules: BurnedInText, identifiers: Iterable[str]) -> Redaction:
    """Clean ``dataset``'s pixels as the module docstring says, or raise :class:`Unsafe`.

    ``identifiers`` are the object's own identifying header values, collected before the header
    is de-identified: the deny-list.
    """
    require_tesseract()
    policy = TextPolicy(rules, identifiers)
    frames = decoded_frames(dataset)
    black = _black(dataset, frames)
    cleaned = frames.copy()
    outside = outside_ultrasound_regions(dataset)
    if outside is not None:
        cleaned[:, outside] = black
    read = frames_to_read(len(frames), rules.cine_frames)
    rendering = DisplayRendering(dataset, frames, read[0])
    boxes = [word.box for i in read for word in read_words(rendering.page(cleaned[i])) if policy.redacts(word)]
    text = _padded(boxes, rules.padding, cleaned.shape[1:3])
    fraction = float(text.mean())
    if fraction > rules.max_redacted_fraction:
        raise Unsafe(
            Reason.BURNED_IN_TEXT_REMAINS,
            f"text covers {fraction:.0%} of the image (limit {rules.max_redacted_fraction:.0%}): "
            "a document or a picture of text, not redacted",
        )
    cleaned[:, text] = black
    verified = frames_to_verify(read)
    remaining = [(i, word) for i in verified for word in read_words(rendering.page(cleaned[i])) if policy.remains(word)]
    if remaining:
        denied = sum(policy.denies(word) for _, word in remaining)
        raise Unsafe(
            Reason.BURNED_IN_TEXT_REMAINS,
            f"{len(remaining)} word(s) read after redaction ({denied} matching the object's identifiers), at "
            + "; ".join(_place(i, word.box) for i, word in remaining[:MAX_PLACES]),
        )
    store_cleaned(dataset, cleaned)
    log.debug("filled %d word boxes (%.1f%% of a frame) in %d frame(s)", len(boxes), 100 * fraction, len(frames))
    return Redaction(len(frames), len(read) + len(verified), len(boxes), fraction)
