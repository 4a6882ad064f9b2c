"""Cheap element access: decide on an element from its raw form, convert only what is touched.

pydicom keeps each element as raw bytes until it is accessed, and writes an untouched raw element
back byte for byte. Converting every element (decoding strings, parsing numbers) and encoding it
again costs more than the read and write themselves, so the de-identifier looks at the tag and
VR of the raw element first and converts only elements it must read or change.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any, TypeGuard

from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID


def raw_vr(dataset: Dataset, tag: BaseTag) -> str:
    """The element's VR, from the raw element (explicit VR) or the dictionary (implicit VR).

    Implicit-VR elements with an ambiguous or unknown VR, and UN elements (which pydicom may
    re-read as their real VR, even as a sequence), are converted to find out.
    """
    raw = dataset._dict[tag]  # Dataset.get_item without its deferred-read handling (never used here)
    if isinstance(raw, RawDataElement):
        if raw.VR and raw.VR != "UN":
            return raw.VR
        if raw.VR is None and not tag.is_private:
            vr = _dictionary_vr(int(tag))
            if vr and " " not in vr:
                return vr
    return dataset[tag].VR


def raw_bytes(dataset: Dataset, tag: BaseTag) -> bytes | None:
    """The undecoded value if the element is still raw, else None."""
    raw = dataset._dict[tag]
    return raw.value if isinstance(raw, RawDataElement) else None


# Character sets (PS3.3 C.12.1.1.2) whose bytes one Python codec decodes; with code extensions
# or any other set, pydicom decodes. ASCII is a subset of both codecs.
SIMPLE_CODECS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO 2022 IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})  # PS3.5 6.2: default repertoire
SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})  # may contain a backslash
TEXT_VR_CODECS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # PS3.5 6.1.2.3: use the character set


SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)  # pydicom converts it while reading


def codec_for(dataset: Dataset, inherited: str | None) -> str | None:
    """The codec of ``dataset``'s own SpecificCharacterSet, else the one it inherits."""
    if SPECIFIC_CHARACTER_SET not in dataset._dict:
        return inherited
    charsets = [str(c or "").strip() for c in as_list(dataset[SPECIFIC_CHARACTER_SET].value)]
    return SIMPLE_CODECS.get(charsets[0]) if len(charsets) == 1 else None


def string_values(dataset: Dataset, tag: BaseTag, vr: str, codec: str | None) -> list[str]:
    """The values of a string element, decoded from the raw bytes when that is safe.

    Decoding the bytes directly skips pydicom's conversion (value objects, validation), which is
    most of the de-identifier's own cost; other character sets go through pydicom.
    """
    raw = dataset._dict[tag]
    decoder = "latin-1" if vr in ASCII_VRS else codec
    if isinstance(raw, RawDataElement) and raw.value is not None and decoder:
        try:
            text: str | None = raw.value.decode(decoder)
        except UnicodeDecodeError:
            text = None
        if text is not None:
            if vr in SINGLE_VALUED_TEXT:
                return [text.rstrip(" \x00")]
            return [part.strip(" \x00") for part in text.split("\\")]
    return [str(v) for v in as_list(dataset[tag].value) if v is not None]


def set_value(dataset: Dataset, tag: BaseTag, vr: str, values: object, codec: str | None) -> None:
    """Replace an element's value without converting the old one first.

    Text is encoded here (``codec`` as for :func:`string_values`) into a raw element in the
    dataset's own encoding, which pydicom writes out byte for byte; anything else becomes a
    regular :class:`~pydicom.dataelem.DataElement`.
    """
    items = values if isinstance(values, list) else [] if values is None else [values]
    encoding = _raw_encoding(dataset, tag)
    text_codec = "ascii" if vr in ASCII_VRS else codec if vr in TEXT_VR_CODECS else None
    if encoding is not None and text_codec and _all_text(items):
        try:
            encoded = "\\".join(items).encode(text_codec)
        except UnicodeEncodeError:
            encoded = None
        if encoded is not None:
            if len(encoded) % 2:
                encoded += b"\x00" if vr == "UI" else b" "
            dataset._dict[tag] = RawDataElement(tag, vr, len(encoded), encoded, 0, *encoding)
            return
    dataset[tag] = DataElement(tag, vr, items[0] if len(items) == 1 else (items or None))


def _all_text(items: list[object]) -> TypeGuard[list[str]]:
    return all(isinstance(v, str) for v in items)


def _raw_encoding(dataset: Dataset, tag: BaseTag) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) for a new raw value of ``tag``, or None to use a DataElement.

    A raw element keeps its own; a new element of a dataset read from a file takes the dataset's,
    so it is written in the encoding the rest of the dataset is copied in. An element pydicom has
    converted stays a DataElement (its raw form is gone).
    """
    old = dataset._dict.get(tag)
    if isinstance(old, RawDataElement):
        return old.is_implicit_VR, old.is_little_endian
    implicit, little = dataset.original_encoding
    if old is None and implicit is not None and little is not None:
        return implicit, little
    return None


def peek(dataset: Dataset, keyword: str, default: object = None) -> Any:  # Any: as Dataset.get's, by VR
    """What ``dataset.get(keyword, default)`` returns, leaving a raw element raw.

    pydicom stores the element it converts, and a converted element is then written by pydicom's
    own per-element writer instead of being copied (:mod:`siteprep.deid.writing`), which costs more
    than the conversion. A single US or UI value is read directly (PS3.5 6.2). Only for attributes
    with one VR: pydicom's correction of ambiguous VRs ("US or SS") is not applied here.
    """
    tag = keyword_tag(keyword)
    element = dataset._dict.get(tag)
    if element is None:
        return default
    if isinstance(element, RawDataElement):
        vr = element.VR or _dictionary_vr(int(tag))
        if element.length == 2 and isinstance(element.value, bytes) and vr == "US":
            return struct.unpack("<H" if element.is_little_endian else ">H", element.value)[0]
        if vr == "UI" and isinstance(element.value, bytes) and b"\\" not in element.value:
            text = element.value.decode(default_encoding).rstrip("\x00 ")  # as pydicom's convert_UI
            return UID(text) if text else text
        if element.value is None and element.length:  # a deferred read: pydicom's own path
            return dataset[tag].value
        element = convert_raw_data_element(element, encoding=dataset.original_character_set, ds=dataset)
    return element.value


def keyword_tag(keyword: str) -> BaseTag:
    """The tag of a data dictionary keyword; an unknown keyword is an error of the caller."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword!r} is not a DICOM data dictionary keyword")
    return BaseTag(tag)


def first_string(dataset: Dataset, keyword: str, codec: str | None = SIMPLE_CODECS[""]) -> str:
    """The first value of a top-level string attribute, or "" (decoded as by :func:`string_values`)."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in dataset._dict:
        return ""
    values = string_values(dataset, BaseTag(tag), raw_vr(dataset, BaseTag(tag)), codec)
    return values[0] if values else ""


def as_list(value: object) -> list:
    """A possibly multi-valued element value as a list of its values."""
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


@cache
def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


@cache
def keyword(tag: int) -> str:
    """The attribute keyword, or ``(gggg,eeee)`` for tags the dictionary does not know."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
