"""Cheap element access: decide on an element from its raw form, convert only what is touched.

pydicom keeps each element as raw bytes until it is accessed, and writes an untouched raw element
back byte for byte. Converting every element (decoding strings, parsing numbers) and encoding it
again costs more than the read and write themselves, so the de-identifier looks at the tag and
VR of the raw element first and converts only elements it must read or change.
"""

from __future__ import annotations

from functools import cache

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag


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
