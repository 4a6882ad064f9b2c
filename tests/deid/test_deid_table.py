"""The project's PS3.15 Table E.1-1 agrees with the reference extraction, row by row and option by
option; the resolver turns it into the actions the standard prescribes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.datadict import keyword_for_tag

from siteprep.deid.profile import Action, Profile, load_table, resolve
from siteprep.deid.settings import ProfileOptions

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ps3.15-table-e1-1-2024b.json"
OPTION_COLUMNS = {
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnInstIdOpt": "retain_institution_identity",
    "cleanGraphOpt": "clean_graphics",
    "cleanStructContOpt": "clean_structured_content",
    "rtnSafePrivOpt": "retain_safe_private",
}


def _reference_tag(text: str) -> str:
    return "(gggg,eeee)" if text.startswith("(GGGG,EEEE)") else text.lower()


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    if not REFERENCE.exists():
        pytest.skip(f"reference table {REFERENCE} not present")
    return {_reference_tag(row["tag"]): row for row in json.loads(REFERENCE.read_text())}


def test_same_rows(reference):
    ours = {row.tag: row for row in load_table()}
    assert len(ours) == len(load_table()) == 621
    assert set(ours) == set(reference)


def test_every_row_and_option_agrees(reference):
    for row in load_table():
        ref = reference[row.tag]
        assert row.name == ref["name"], row.tag
        assert row.basic == ref["basicProfile"], row.tag
        expected = {ours: ref[theirs] for theirs, ours in OPTION_COLUMNS.items() if theirs in ref}
        assert dict(row.options) == expected, row.tag


def test_keywords_match_pydicom_dictionary():
    for row in load_table():
        if "x" in row.tag or "g" in row.tag:
            assert row.keyword == ""
        else:
            assert row.keyword == keyword_for_tag(int(row.tag[1:5] + row.tag[6:10], 16)), row.tag


def test_action_code_counts_match_the_2024b_basic_column():
    counts: dict[str, int] = {}
    for row in load_table():
        counts[row.basic] = counts.get(row.basic, 0) + 1
    assert counts == {"X": 384, "D": 92, "U": 54, "Z": 42, "X/D": 22, "X/Z": 11, "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2}


def _row(keyword: str):
    return next(row for row in load_table() if row.keyword == keyword)


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("PatientName", Action.EMPTY),  # Z
        ("StudyInstanceUID", Action.UID),  # U
        ("InstitutionName", Action.DUMMY),  # X/Z/D -> D keeps any IOD valid
        ("ReferencedImageSequence", Action.UID),  # X/Z/U* -> items kept, UIDs replaced
        ("AcquisitionContextSequence", Action.EMPTY),  # X/Z
        ("ImageComments", Action.REMOVE),  # X
    ],
)
def test_basic_profile_resolution(keyword, expected):
    assert resolve(_row(keyword), ProfileOptions(retain_longitudinal_modified_dates=False)) is expected


def test_options_override_basic_profile():
    options = ProfileOptions(retain_uids=True, retain_institution_identity=True, clean_descriptors=True)
    assert resolve(_row("StudyInstanceUID"), options) is Action.KEEP
    assert resolve(_row("InstitutionName"), options) is Action.KEEP
    assert resolve(_row("StudyDescription"), options) is Action.CLEAN
    assert resolve(_row("StudyDate"), ProfileOptions()) is Action.CLEAN  # modified dates on by default
    assert (
        resolve(
            _row("StudyDate"),
            ProfileOptions(retain_longitudinal_modified_dates=False, retain_longitudinal_full_dates=True),
        )
        is Action.KEEP
    )


def test_temporal_option_wins_over_device_identity():
    """Retain Device Identity must not bring back an unshifted calibration date."""
    row = _row("DateOfLastDetectorCalibration")
    options = ProfileOptions(retain_device_identity=True)
    if "retain_device_identity" in row.options:
        assert resolve(row, options) is Action.CLEAN


def test_full_and_modified_dates_exclude_each_other():
    with pytest.raises(ValueError):
        ProfileOptions(retain_longitudinal_full_dates=True, retain_longitudinal_modified_dates=True)


def test_method_codes_follow_options():
    profile = Profile(ProfileOptions(clean_descriptors=True))
    assert [code for code, _ in profile.method_codes()] == ["113100", "113105", "113107"]
    assert len(profile.description()) <= 64
