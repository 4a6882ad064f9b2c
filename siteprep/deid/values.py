"""Value-level operations of Table E.1-1 actions: dummies (D), date shifts and text cleaning (C).

Dummy values are chosen per Value Representation (PS3.5 6.2) so the output stays valid DICOM;
they carry no information and are listed in :data:`DUMMY_TEXTS` so the residual scan does not
mistake an original placeholder that happens to equal one of them for a leak.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from functools import lru_cache

DUMMY_DATE = "19000101"
DUMMY_DATETIME = DUMMY_DATE + "000000"
DUMMY = {
    "AE": "DEIDENTIFIED",
    "AS": "000D",
    "CS": "DEIDENTIFIED",
    "DA": DUMMY_DATE,
    "DT": DUMMY_DATETIME,
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "DEIDENTIFIED",
    "LT": "DEIDENTIFIED",
    "SH": "DEIDENTIFIED",
    "ST": "DEIDENTIFIED",
    "UC": "DEIDENTIFIED",
    "UT": "DEIDENTIFIED",
    "PN": "DEIDENTIFIED",
    "UR": "",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "AT": 0,
}
DUMMY_TEXTS = frozenset({"DEIDENTIFIED", DUMMY_DATE, DUMMY_DATETIME})
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "AE", "PN", "CS", "UR"})
REDACTED = "*"
_DATETIME = re.compile(r"^(\d{4}(?:\d{2}){0,5})(?:\.\d{1,6})?(?:[+-]\d{4})?$")

# Identifier-shaped substrings that Clean Descriptors must remove even when they match no known
# value of the object: dates in common spellings, phone numbers, e-mail addresses, long numbers.
_PATTERNS = re.compile(
    r"\b\d{4}[-./]\d{1,2}[-./]\d{1,2}\b|\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b|\b(?:19|20)\d{6}\b"
    r"|\+?\d[\d ()-]{7,}\d|[\w.+-]+@[\w-]+\.[\w.-]+|\b\d{6,}\b"
)


def dummy(vr: str) -> object:
    """A dummy value for D; None means the VR has no meaningful dummy (bytes, sequences): empty it."""
    return DUMMY.get(vr)


@lru_cache(maxsize=1 << 16)
def parse_date(text: str) -> dt.date | None:
    """``text`` read as YYYYMMDD (as :func:`~datetime.datetime.strptime` reads it), else None.

    Cached: an object's dates recur in every object of its study, and a failed parse (most
    identifiers are not dates) costs an exception.
    """
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def shift_date(value: str, days: int) -> str:
    """Shift a DA (YYYYMMDD) by whole days; an unparseable date becomes the dummy date."""
    date = parse_date(value.strip()[:8])
    if date is None:
        return DUMMY_DATE
    return (date + dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """Shift the date part of a DT (YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]); the time of day is kept.

    A DT with less than a full date is widened to a full date first, because a bare year or month
    cannot be shifted by days; anything that is not a DT becomes the dummy.
    """
    match = _DATETIME.match(value.strip())
    if match is None:
        return DUMMY_DATETIME
    digits, rest = match.group(1), value.strip()[len(match.group(1)) :]
    date_part = (digits[:8] + "0101"[len(digits[:8]) - 4 :]) if len(digits) < 8 else digits[:8]
    return shift_date(date_part, days) + digits[8:] + rest


def shift_multi(value: str, days: int, vr: str) -> str:
    """Shift every value of a multi-valued DA or DT (values separated by backslash)."""
    shift = shift_date if vr == "DA" else shift_datetime
    return "\\".join(shift(part, days) if part else part for part in value.split("\\"))


def clean_text(value: str, identifiers: Iterable[str], patterns: bool = True) -> str:
    """Drop every known identifier of the object from ``value`` (case-insensitive).

    With ``patterns`` (action C, PS3.15 E.3.5 Clean Descriptors) identifier-shaped substrings
    go too: dates, phone numbers, e-mail addresses, long numbers. Without it (a value the profile
    keeps) only the object's own identifying values are removed.
    """
    cleaned = value
    for identifier in sorted(identifiers, key=len, reverse=True):
        if identifier and identifier.lower() in cleaned.lower():
            cleaned = re.sub(re.escape(identifier), REDACTED, cleaned, flags=re.IGNORECASE)
    return _PATTERNS.sub(REDACTED, cleaned) if patterns else cleaned
