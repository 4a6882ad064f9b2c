"""Is a series a head? Decided from its header first, then from the size of its stack.

After de-identification with the shipped profile the descriptions are gone (PS3.15 Table E.1-1
removes SeriesDescription and StudyDescription, and ProtocolName unless Clean Descriptors keeps
it), so BodyPartExamined is usually the only word left. A series is therefore screened in three
ways: a head word anywhere makes it a head; another body part makes it "not a head"; no body
part at all makes it a *possible* head when its field of view could hold one. Heads and possible
heads are both registered, and the template fit (:mod:`.quality`) confirms them on the volume:
a possible head that does not fit goes to quarantine rather than through, because a head that
its scanner did not label must not escape defacing (fail closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydicom.dataset import Dataset

from siteprep.deface.settings import DefaceSettings

DEFACEABLE_MODALITIES = frozenset({"CT", "MR"})
SCREENED_ATTRIBUTES = ("BodyPartExamined", "ProtocolName", "SeriesDescription", "StudyDescription")


class HeaderVerdict(StrEnum):
    HEAD = "head"
    POSSIBLE_HEAD = "possible_head"  # CT or MR without any body part named
    NOT_A_HEAD = "not_a_head"


@dataclass(frozen=True)
class Screening:
    verdict: HeaderVerdict
    why: str  # what was read, for the report


def _head_word(text: str, words: tuple[str, ...]) -> str | None:
    """The first head word that starts a word of ``text`` ("T1_BRAIN" and "HEADNECK" match, "FOREHEAD" not)."""
    for word in words:
        if re.search(rf"(?<![A-Z]){re.escape(word.upper())}", text.upper()):
            return word
    return None


def screen_header(header: Dataset, settings: DefaceSettings) -> Screening:
    """The header's verdict on one slice of a series (the series shares its modality and body part)."""
    modality = str(header.get("Modality", ""))
    if modality not in DEFACEABLE_MODALITIES:
        return Screening(HeaderVerdict.NOT_A_HEAD, f"modality {modality or 'missing'}")
    for attribute in SCREENED_ATTRIBUTES:
        text = str(header.get(attribute, "") or "")
        word = _head_word(text, settings.head_words)
        if word:
            return Screening(HeaderVerdict.HEAD, f"{attribute} {text!r} names the head ({word})")
    body_part = str(header.get("BodyPartExamined", "") or "")
    if body_part:
        return Screening(HeaderVerdict.NOT_A_HEAD, f"BodyPartExamined {body_part!r}")
    return Screening(HeaderVerdict.POSSIBLE_HEAD, f"{modality} without a body part")


def stack_extent_mm(ras_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Edge lengths of the stack (columns, rows, slices) in mm, from its voxel-to-patient affine."""
    return np.linalg.norm(ras_affine[:3, :3], axis=0) * np.array(shape[:3], dtype=float)


def extent_problem(screening: Screening, extent_mm: np.ndarray, settings: DefaceSettings) -> str | None:
    """Why a stack of this size cannot be taken as a head, or None.

    A head is about 150 x 190 x 230 mm, and head scans use fields of view of 180-300 mm: a slice
    much wider is a body's, a stack thinner than ``min_extent_mm`` cannot show enough of a head
    for the registration to be trusted.
    """
    if float(extent_mm.min()) < settings.min_extent_mm:
        return f"stack {' x '.join(f'{e:.0f}' for e in extent_mm)} mm is thinner than {settings.min_extent_mm:g} mm"
    in_plane = float(extent_mm[:2].max())
    if screening.verdict is HeaderVerdict.POSSIBLE_HEAD and in_plane > settings.max_field_of_view_mm:
        return f"field of view {in_plane:.0f} mm is a body's, wider than {settings.max_field_of_view_mm:g} mm"
    return None
