"""Encode a de-identified dataset as a DICOM file (PS3.10 7.1) in one buffer.

Most elements of a de-identified dataset are still the raw elements pydicom read: the engine
decides by tag and VR and converts only what it changes (:mod:`siteprep.deid.elements`). pydicom's
writer spends more per element (a scratch buffer, checks, a tag object) than copying the bytes
costs, and that per-element cost was most of the write. So a raw element whose encoding is the
output's is copied here as header + value, sequences are walked here, and only converted elements
go through pydicom's :func:`~pydicom.filewriter.write_data_element`; the bytes are those pydicom
would write. A dataset that pydicom would re-encode (read in another transfer syntax or character
set than it is written in) is left to pydicom whole, as are the deflated transfer syntax
(compressed after encoding) and transfer syntaxes pydicom cannot name an encoding for.
"""

from __future__ import annotations

import struct

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import (
    dcmwrite,
    validate_file_meta,
    write_data_element,
    write_dataset,
)
from pydicom.tag import BaseTag, tag_in_exception
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from siteprep.deid.elements import peek

EMPTY_PREAMBLE = b"\x00" * 128  # a preamble may hold anything (PS3.10 7.1, e.g. TIFF tags)
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
FILE_META_GROUP_LENGTH = BaseTag(0x00020000)
# Version, SOP class and instance, transfer syntax, implementation class UID and version name
_FILE_META_CHECKED = tuple(BaseTag(t) for t in (0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013))


class _Encoder:
    """Header packing for one transfer syntax (PS3.5 7.1.2 explicit, 7.1.3 implicit VR)."""

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit, self.little = implicit, little
        order = "<" if little else ">"
        self.tag_and_length = struct.Struct(f"{order}HHL").pack  # implicit VR, items, delimiters
        self.short_header = struct.Struct(f"{order}HH2sH").pack  # explicit VR, 16-bit length
        self.long_header = struct.Struct(f"{order}HH2s2xL").pack  # explicit VR, 32-bit length

    def header(self, tag: int, vr: str, length: int) -> bytes:
        if self.implicit:
            return self.tag_and_length(tag >> 16, tag & 0xFFFF, length)
        if vr in _LONG_VRS:
            return self.long_header(tag >> 16, tag & 0xFFFF, vr.encode(), length)
        return self.short_header(tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def marker(self, tag: int, length: int) -> bytes:
        """An item or delimiter tag with its 4-byte length (never with a VR, PS3.5 7.5)."""
        return self.tag_and_length(tag >> 16, tag & 0xFFFF, length)

    def by_pydicom(self, write: object, *args: object) -> bytes:
        """What one of pydicom's writers writes, for what is not copied here."""
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.little
        write(buffer, *args)  # type: ignore[operator]
        return buffer.getvalue()


def _raw_value(raw: RawDataElement, encoder: _Encoder) -> bytes | None:
    """The value of a raw element pydicom would write back unchanged as header + value, else None.

    Undefined lengths (encapsulated pixel data) are left to pydicom, which checks the items.
    Explicit VR needs a 2-character VR and, for 16-bit-length VRs, a value that fits (pydicom
    writes a longer one as UN). An empty value is read as None, which pydicom converts first;
    that keeps the VR unless it is UN (then the dictionary's VR is written).
    """
    value = raw.value
    if value is None:
        if raw.length or not (encoder.implicit or raw.VR != "UN"):
            return None
        value = b""
    if not isinstance(value, bytes) or raw.length == UNDEFINED_LENGTH:
        return None
    if encoder.implicit or (raw.VR is not None and len(raw.VR) == 2 and (raw.VR in _LONG_VRS or len(value) <= 0xFFFF)):
        return value
    return None


def _encode_dataset(dataset: Dataset, encoder: _Encoder, parent_encoding: str | list[str], out: list[bytes]) -> None:
    """Append ``dataset``'s encoding to ``out``, as :func:`pydicom.filewriter.write_dataset`."""
    if (
        dataset.original_encoding != (encoder.implicit, encoder.little)
        or dataset.original_character_set != dataset._character_set
    ):
        # pydicom converts and re-encodes every element of such a dataset (and corrects VRs)
        out.append(encoder.by_pydicom(write_dataset, dataset, parent_encoding))
        return
    encodings: str | list[str] | None = None
    elements = dataset._dict
    for tag in sorted(elements, key=int):  # int order, without BaseTag's Python-level comparison
        if not tag & 0xFFFF and tag >> 16 > 6:  # retired group lengths are not written (PS3.5 7.2)
            continue
        element = elements[tag]
        if isinstance(element, RawDataElement):
            value = _raw_value(element, encoder)
            if value is not None:
                # VR None only under implicit VR, whose header has none (_raw_value requires one otherwise)
                out.append(encoder.header(tag, element.VR or "", len(value)))
                out.append(value)
                continue
            element = dataset.get_item(tag)  # converts an empty (or deferred) raw element
        if encodings is None:
            encodings = dataset.get("SpecificCharacterSet", parent_encoding)
        if isinstance(element, DataElement) and element.VR == "SQ":
            _encode_sequence(element, encoder, encodings, out)
        elif _plain_bytes(element):
            value = element.value
            out.append(encoder.header(tag, element.VR, len(value) + len(value) % 2))
            out.append(value)
            if len(value) % 2:
                out.append(b"\x00")  # PS3.5 7.1.1: even length, OB/OW padded with a NUL
        else:
            with tag_in_exception(tag):
                out.append(encoder.by_pydicom(write_data_element, element, encodings))


def _plain_bytes(element: DataElement | RawDataElement) -> bool:
    """An OB/OW element holding bytes of a defined length: its value is written as it is."""
    return (
        isinstance(element, DataElement)
        and element.VR in ("OB", "OW")
        and isinstance(element.value, bytes)
        and not element.is_undefined_length
    )


def _encode_sequence(element: DataElement, encoder: _Encoder, encodings: str | list[str], out: list[bytes]) -> None:
    """A sequence with its items, lengths filled in as pydicom does (undefined where marked)."""
    items: list[bytes] = []
    for item in element.value or ():
        body: list[bytes] = []
        _encode_dataset(item, encoder, encodings, body)
        # set by pydicom's reader on such items only; vars() skips Dataset.__getattr__'s keyword search
        undefined = vars(item).get("is_undefined_length_sequence_item", False)
        length = sum(len(chunk) for chunk in body)
        items.append(encoder.marker(ITEM, UNDEFINED_LENGTH if undefined else length))
        items.extend(body)
        if undefined:
            items.append(encoder.marker(ITEM_DELIMITER, 0))
    undefined = element.is_undefined_length
    length = sum(len(chunk) for chunk in items)
    out.append(encoder.header(element.tag, "SQ", UNDEFINED_LENGTH if undefined else length))
    out.extend(items)
    if undefined:
        out.append(encoder.marker(SEQUENCE_DELIMITER, 0))


def _mark_pixel_data_length(dataset: Dataset, compressed: bool) -> None:
    """PS3.5 A.4: encapsulated pixel data has undefined length, native pixel data a defined one.

    A raw element read that way already, with a VR and an even length pydicom's conversion would
    keep, is left raw (and copied, or checked by pydicom); converting would only copy the pixels.
    """
    raw = dataset._dict.get(BaseTag(PIXEL_DATA))
    if raw is None or (
        isinstance(raw, RawDataElement)
        and (raw.length == UNDEFINED_LENGTH) == compressed
        and raw.VR in (None, "OB", "OW")
        and not len(raw.value or b"") % 2
    ):
        return
    dataset[PIXEL_DATA].is_undefined_length = compressed


def encode_file(dataset: Dataset) -> bytes:
    """The bytes of ``dataset`` as a file with an empty preamble and its (rebuilt) file meta."""
    dataset.preamble = EMPTY_PREAMBLE
    syntax = UID(peek(dataset.file_meta, "TransferSyntaxUID") or "")
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_transfer_syntax or syntax.is_private:
        buffer = DicomBytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()
    out = [EMPTY_PREAMBLE, b"DICM", _file_meta(dataset.file_meta)]
    _mark_pixel_data_length(dataset, syntax.is_compressed)
    _encode_dataset(dataset, _Encoder(syntax.is_implicit_VR, syntax.is_little_endian), default_encoding, out)
    return b"".join(out)


def _file_meta(meta: FileMetaDataset) -> bytes:
    """The file meta group with its group length first, as pydicom's ``write_file_meta_info``.

    pydicom's validation (which adds a missing version or implementation, and refuses a missing
    or empty SOP class, instance or transfer syntax) converts every element it checks, so it runs
    only when an element it checks is missing or empty.
    """
    elements = meta._dict
    if not all(_has_value(elements.get(tag)) for tag in _FILE_META_CHECKED) or any(tag.group != 2 for tag in elements):
        validate_file_meta(meta, enforce_standard=True)
    meta.pop(FILE_META_GROUP_LENGTH, None)  # recomputed below
    body: list[bytes] = []
    encoder = _Encoder(implicit=False, little=True)  # PS3.10 7.1: always explicit VR little endian
    _encode_dataset(meta, encoder, default_encoding, body)
    length = sum(len(chunk) for chunk in body)
    return b"".join([encoder.header(FILE_META_GROUP_LENGTH, "UL", 4), struct.pack("<L", length), *body])


def _has_value(element: DataElement | RawDataElement | None) -> bool:
    if isinstance(element, RawDataElement):
        return isinstance(element.value, bytes) and bool(element.value.strip(b"\x00 "))
    return element is not None and not element.is_empty
