"""The Basic Application Level Confidentiality Profile with options, resolved to one action per tag.

The project's copy of PS3.15 2024b Table E.1-1 lives in ``ps315_table.json`` beside this module
(rows: tag, keyword, name, Basic Profile action, option-column actions). :class:`Profile` turns
that table and a site's :class:`~siteprep.deid.settings.ProfileOptions` into a single action per
attribute, so the per-element work in :mod:`siteprep.deid.engine` is one dictionary look-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import MappingProxyType

from siteprep.deid.settings import ProfileOptions

TABLE_PATH = Path(__file__).with_name("ps315_table.json")
TEMPORAL_OPTIONS = ("retain_longitudinal_full_dates", "retain_longitudinal_modified_dates")


class Action(StrEnum):
    """PS3.15 Table E.1-1 action codes (E.1.1), after compound codes were resolved."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    CLEAN = "C"
    UID = "U"


# A compound code lets the implementer pick by the attribute's Type in the IOD (E.1.1). The IOD
# is not known per element here, so the pick keeps any IOD valid: D (a dummy) satisfies Type 1,
# Z (empty) Type 2, and X/Z/U* on a reference sequence keeps the items with their UIDs replaced,
# which keeps references between de-identified instances intact.
COMPOUND = MappingProxyType(
    {
        "X/Z": Action.EMPTY,
        "X/D": Action.DUMMY,
        "Z/D": Action.DUMMY,
        "X/Z/D": Action.DUMMY,
        "X/Z/U*": Action.UID,
    }
)

# DCM codes of CID 7050 "De-identification Method" for the profile and each option (PS3.16).
METHOD_CODES = MappingProxyType(
    {
        "basic": ("113100", "Basic Application Confidentiality Profile"),
        "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
        "clean_graphics": ("113103", "Clean Graphics Option"),
        "clean_structured_content": ("113104", "Clean Structured Content Option"),
        "clean_descriptors": ("113105", "Clean Descriptors Option"),
        "retain_longitudinal_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
        "retain_longitudinal_modified_dates": (
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
        ),
        "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
        "retain_device_identity": ("113109", "Retain Device Identity Option"),
        "retain_uids": ("113110", "Retain UIDs Option"),
        "retain_safe_private": ("113111", "Retain Safe Private Option"),
        "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    }
)


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1. ``tag`` is ``(gggg,eeee)`` with ``x`` for repeating-group digits."""

    tag: str
    keyword: str
    name: str
    basic: str
    options: Mapping[str, str]


@cache
def load_table() -> tuple[TableRow, ...]:
    """The project's table (621 rows in the 2024b edition)."""
    document = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    return tuple(
        TableRow(r["tag"], r["keyword"], r["name"], r["basic"], MappingProxyType(dict(r["options"])))
        for r in document["rows"]
    )


def resolve(row: TableRow, options: ProfileOptions) -> Action:
    """The action for one row under the enabled options.

    A temporal option decides a row it has a column for, even when another enabled option would
    keep it (Retain Device Identity must not bring back an unshifted calibration date when dates
    are modified). Otherwise the enabled options' actions win over the Basic Profile, K over C.
    """
    enabled = [name for name in options.enabled() if name in row.options]
    temporal = [row.options[name] for name in enabled if name in TEMPORAL_OPTIONS]
    codes = temporal or [row.options[name] for name in enabled]
    if codes:
        return Action.KEEP if "K" in codes else Action.CLEAN
    return COMPOUND.get(row.basic) or Action(row.basic)


def _tag_number(text: str) -> int:
    return int(text[1:5] + text[6:10], 16)


class Profile:
    """Actions per tag for one set of options, plus the repeating-group and private rules."""

    def __init__(self, options: ProfileOptions) -> None:
        self.options = options
        self.by_tag: dict[int, Action] = {}
        self.repeating: dict[str, Action] = {}
        for row in load_table():
            action = resolve(row, options)
            if row.tag == "(gggg,eeee)":
                self.private = action
            elif "x" in row.tag:
                self.repeating[row.tag] = action
            else:
                self.by_tag[_tag_number(row.tag)] = action

    def action_for(self, tag: int) -> Action | None:
        """The table's action for a public tag, or None when the table has no row for it."""
        return self.by_tag.get(tag)

    def method_codes(self, clean_pixel_data: bool = False) -> list[tuple[str, str]]:
        """(code value, meaning) of the profile and every option applied, for the method sequence."""
        names = ["basic", *(["clean_pixel_data"] if clean_pixel_data else []), *self.options.enabled()]
        return sorted(METHOD_CODES[name] for name in names)

    def description(self, clean_pixel_data: bool = False) -> str:
        """DeidentificationMethod text (LO, at most 64 characters per value)."""
        return "PS3.15 E " + " ".join(code for code, _ in self.method_codes(clean_pixel_data))
