"""Defacing settings: the ``[deid.deface]`` table of ``configs/deid.toml``.

They live in the de-identification settings because defacing is one of its options (PS3.15 E.3.2)
and ``insite site deid`` can run it; ``insite site deface`` reads the same table, so a site sets its
thresholds once.
"""

from __future__ import annotations

from pydantic import Field

from common.validation import StrictModel


class DefaceSettings(StrictModel):
    """Which series count as heads, and how good a registration must be before voxels are removed."""

    enabled: bool = Field(default=False, description="'insite site deid' defaces the head series it writes")
    head_words: tuple[str, ...] = Field(
        default=("HEAD", "BRAIN", "SKULL", "NEURO", "CRANI", "CEREBR", "ORBIT", "SINUS", "FACE"),
        description="a word of these in BodyPartExamined, ProtocolName, SeriesDescription or StudyDescription "
        "marks a head series",
    )
    max_field_of_view_mm: float = Field(
        default=350.0, gt=0, description="a wider slice (a body scan) is not taken for a head without a head word"
    )
    min_extent_mm: float = Field(
        default=80.0, gt=0, description="a stack thinner than this in any direction cannot be confirmed as a head"
    )
    registration_mm: float = Field(
        default=4.0, ge=1.0, le=8.0, description="grid spacing the template is registered on (coarser is faster)"
    )
    min_head_overlap: float = Field(
        default=0.90, gt=0, le=1, description="Dice of the registered template's head with the series' head"
    )
    min_face_overlap: float = Field(
        default=0.85, gt=0, le=1, description="the same Dice, inside the registered face region only"
    )
    max_scale_change: float = Field(
        default=0.25, gt=0, lt=1, description="the fitted template may grow or shrink by at most this along any axis"
    )
