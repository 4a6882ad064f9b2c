"""Why a file was quarantined instead of written: one code per reason, stable for scripts."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    NOT_DICOM = "not_dicom"  # no preamble + 'DICM' (PS3.10 7.1), nor one unambiguous bare data set
    UNREADABLE = "unreadable"  # pydicom raised while parsing
    PARSE_WARNING = "parse_warning"  # parsed only by guessing (e.g. VR/transfer syntax contradiction)
    MISSING_TRANSFER_SYNTAX = "missing_transfer_syntax"
    TRUNCATED = "truncated"  # an element's value ends before its declared length
    MISSING_SOP_INSTANCE = "missing_sop_instance"  # no SOPClassUID/SOPInstanceUID: cannot be filed safely
    BURNED_IN_ANNOTATION = "burned_in_annotation"  # BurnedInAnnotation says YES
    RISKY_MODALITY = "risky_modality"  # US, OT, XC, ES, ... usually carry burned-in text
    RISKY_SOP_CLASS = "risky_sop_class"  # secondary/screen capture, encapsulated document, dose report
    SCANNED_OR_CAPTURED = "scanned_or_captured"  # ConversionType or ImageType says scanned/screen capture
    LOW_INTENSITY_VARIANCE = "low_intensity_variance"  # few grey levels: likely a picture of text (seed 003)
    PIXEL_DATA_UNDECODABLE = "pixel_data_undecodable"  # cannot be checked for burned-in text
    OCR_UNAVAILABLE = "ocr_unavailable"  # burned-in text redaction is on, but tesseract is not installed
    OCR_FAILED = "ocr_failed"  # tesseract failed on the object's pixels
    BURNED_IN_TEXT_REMAINS = "burned_in_text_remains"  # text read again after redaction, or too much to redact
    WRITE_FAILED = "write_failed"
    DEID_FAILED = "deid_failed"  # the de-identifier itself raised: a bug to report


class Unsafe(Exception):
    """Raised inside the per-file pipeline: the file goes to quarantine with this reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
