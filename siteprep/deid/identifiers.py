"""The identifying values an object holds, by the categories the residual scan must prove gone.

Names (every PN), dates and datetimes, UIDs that are not registered standard UIDs, and the values
of Table E.1-1 rows whose keyword names an identifier (IDs, numbers, addresses, telephone numbers,
institutions, stations, physicians, operators, issuers...), in every dataset of the object: top
level, file meta, nested sequences and private blocks. Rows the active options keep (K) are not
identifiers under that profile. Time-of-day values (TM) are not collected: the modified-dates
option shifts whole days and keeps the time of day (PS3.15 E.3.6).

The same set drives two things: :mod:`siteprep.deid.engine` scrubs these values out of every
retained text value (so an identifier typed into a kept attribute does not survive) and
:mod:`siteprep.deid.scan` searches the output for them.
"""

from __future__ import annotations

import re
from functools import cache

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from siteprep.deid.elements import (
    SIMPLE_CODECS,
    codec_for,
    keyword,
    raw_vr,
    string_values,
)
from siteprep.deid.profile import Action, Profile
from siteprep.deid.values import DUMMY_TEXTS

MIN_TEXT_LENGTH = 4
MIN_NUMBER_LENGTH = 6  # short numbers (4-digit IDs) collide with counts, sizes and UID digits
_IDENTIFYING_KEYWORD = re.compile(
    r"ID$|IDs$|IDSequence$|Number|Address|Telephone|Institution|Department|Station|Physician"
    r"|Operator|Name|Email|Locator|AETitle|Issuer|Author|Contact|Responsible|Location|Origin"
)
_PN_SPLIT = re.compile(r"[\^=]")
# Names the writing software, not anybody; rewritten in every output file meta anyway.
_NOT_IDENTIFYING = frozenset({0x00020012, 0x00020013})


@cache
def _identifying_keywords(profile: Profile) -> frozenset[int]:
    return frozenset(
        tag
        for tag, action in profile.by_tag.items()
        if action is not Action.KEEP and _IDENTIFYING_KEYWORD.search(keyword(tag))
    )


def is_registered_uid(value: str) -> bool:
    """Standard UIDs (SOP classes, transfer syntaxes, coding schemes) identify nobody."""
    return value in UID_dictionary


def _significant(value: str) -> bool:
    text = value.strip()
    if text.upper() in DUMMY_TEXTS:
        return False
    bare = text.replace(".", "")
    return len(text) >= (MIN_NUMBER_LENGTH if bare.isdigit() else MIN_TEXT_LENGTH)


@cache
def _never_identifying(profile: Profile) -> frozenset[int]:
    """Tags whose values are not collected: those the profile keeps, and the writer's names."""
    return frozenset(tag for tag, action in profile.by_tag.items() if action is Action.KEEP) | _NOT_IDENTIFYING


def _collect(dataset: Dataset, profile: Profile, out: set[str], codec: str | None) -> None:
    identifying = _identifying_keywords(profile)
    skipped = _never_identifying(profile)
    codec = codec_for(dataset, codec)
    for tag in list(dataset._dict):
        vr = raw_vr(dataset, tag)
        if vr == "SQ":
            for item in dataset[tag].value or ():
                _collect(item, profile, out, codec)
            continue
        number = int(tag)  # int keys: a BaseTag compares equal in Python code, an int in C
        if number in skipped:
            continue
        if vr in ("PN", "DA", "DT") or number in identifying or (vr == "UI" and not number >> 16 & 1):
            for text in string_values(dataset, tag, vr, codec):
                if vr == "UI" and is_registered_uid(text):
                    continue
                parts = [text, *_PN_SPLIT.split(text)] if vr == "PN" else [text]
                out.update(part.strip() for part in parts if _significant(part))


def collect_identifiers(dataset: Dataset, profile: Profile) -> set[str]:
    """Every identifying value in ``dataset`` (file meta and nested sequences included)."""
    found: set[str] = set()
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        _collect(meta, profile, found, SIMPLE_CODECS[""])
    _collect(dataset, profile, found, SIMPLE_CODECS[""])
    return found
