"""What de-identification does to a real series: relationships, dates, the method attributes,
file meta, private blocks and options; pixel data untouched and output readable by pydicom."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from deploy.demo.synthetic_dicom import PRIVATE_CREATOR, PRIVATE_GROUP
from siteprep.deid.engine import deidentify_dataset
from siteprep.deid.errors import DeidError
from siteprep.deid.keys import SiteKey, open_site_key
from siteprep.deid.profile import Profile
from siteprep.deid.run import deidentify_tree
from siteprep.deid.settings import DeidSettings, ProfileOptions, SafePrivate


def _outputs(folder: Path) -> list:
    return [dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def _by_original_instance(source: Path) -> dict:
    return {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in source.rglob("*.dcm")}


def test_series_study_and_frame_relationships_survive(tmp_path, settings, planted_tree):
    source, patients = planted_tree
    report = deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    assert report.written == 12 and not report.quarantined
    outputs = _outputs(tmp_path / "out")
    originals = [dcmread(p) for p in sorted(source.rglob("*.dcm"))]
    # a bijection between original and new UIDs at every level
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        new, old = {str(getattr(d, keyword)) for d in outputs}, {str(getattr(d, keyword)) for d in originals}
        assert len(new) == len(old)
        assert not new & old and all(uid.startswith("2.25.") for uid in new)
    instances = {str(d.SOPInstanceUID) for d in outputs}
    references = [
        d.ReferencedImageSequence[0].ReferencedSOPInstanceUID for d in outputs if "ReferencedImageSequence" in d
    ]
    assert len(references) == 9 and set(references) <= instances  # references in sequences follow
    for ds in outputs:
        assert "RequestAttributesSequence" not in ds  # X in Table E.1-1
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert len({str(d.PatientID) for d in outputs}) == 2


def test_method_attributes_and_dates(tmp_path, settings, planted_tree):
    source, patients = planted_tree
    deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    for ds in _outputs(tmp_path / "out"):
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107"]
        assert all(item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence)
        assert ds.PatientName == ds.PatientID and str(ds.PatientID).startswith("SUBJ-")
        assert ds.StudyDate == ds.SeriesDate == ds.ContentDate  # one offset for all of a patient's dates
        assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
        for keyword in (
            "InstitutionAddress",
            "PatientAddress",
            "PatientTelephoneNumbers",
            "OtherPatientIDs",
            "ImageComments",
            "StudyDescription",
            "SeriesDescription",
        ):
            assert keyword not in ds or not ds[keyword].value or ds[keyword].value == "DEIDENTIFIED", keyword
        assert not any(tag.is_private for tag in ds.keys())


def test_key_maps_back_and_dates_shift_by_the_patients_offset(tmp_path, settings, planted_tree, key_patients):
    """The honest-broker key maps each subject to its patient, and every date of that patient
    moved by the same offset (intervals preserved)."""
    source, patients = planted_tree
    deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    by_subject = key_patients(settings)
    study_dates = {p.patient_id: p.study_date for p in patients}
    for ds in _outputs(tmp_path / "out"):
        entry = by_subject[str(ds.PatientID)]
        original = dt.datetime.strptime(study_dates[entry["original"]["PatientID"]], "%Y%m%d").date()
        shifted = original + dt.timedelta(days=entry["date_offset_days"])
        assert ds.StudyDate == ds.SeriesDate == ds.ContentDate == shifted.strftime("%Y%m%d")
        assert -3650 <= entry["date_offset_days"] <= -365
    assert len({e["date_offset_days"] for e in by_subject.values()}) == 2


def test_pixel_data_unchanged_and_output_valid(tmp_path, settings, planted_tree):
    source, _ = planted_tree
    deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    original_pixels = {bytes(d.PixelData) for d in (dcmread(p) for p in source.rglob("*.dcm"))}
    for path in (tmp_path / "out").rglob("*.dcm"):
        ds = dcmread(path)  # force=False: preamble + DICM + meta present
        assert ds.preamble == b"\x00" * 128
        assert bytes(ds.PixelData) in original_pixels
        assert ds.pixel_array.shape == (16, 16)


def test_safe_private_allow_list_keeps_only_listed(tmp_path, planted_tree):
    source, _ = planted_tree
    settings = DeidSettings(
        site="site-a",
        key_file=tmp_path / "k.enc",
        options=ProfileOptions(retain_safe_private=True),
        safe_private=(SafePrivate(creator=PRIVATE_CREATOR, group=PRIVATE_GROUP, element=0x01),),
    )
    deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    ds = _outputs(tmp_path / "out")[0]
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert 0x01 in block and 0x02 not in block and 0x03 not in block
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence][-1] == "113111"


def test_retain_options_keep_what_they_name(tmp_path, planted_tree, make_settings):
    source, patients = planted_tree
    settings = make_settings(
        retain_uids=True,
        retain_institution_identity=True,
        retain_longitudinal_modified_dates=False,
        retain_longitudinal_full_dates=True,
    )
    deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    originals = _by_original_instance(source)
    for ds in _outputs(tmp_path / "out"):
        original = originals[str(ds.SOPInstanceUID)]
        assert ds.StudyInstanceUID == original.StudyInstanceUID
        assert ds.InstitutionName == original.InstitutionName
        assert ds.StudyDate == original.StudyDate
        assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
        assert ds.PatientID != original.PatientID


def test_device_and_patient_characteristics_options(tmp_path, planted_tree, make_settings):
    source, _ = planted_tree
    deidentify_tree(
        make_settings(retain_device_identity=True, retain_patient_characteristics=True),
        source,
        tmp_path / "out",
        tmp_path / "q",
    )
    for ds in _outputs(tmp_path / "out"):
        assert ds.StationName == "ELSEWHERE-CT1" and ds.PatientSex == "O"
        assert {"113108", "113109"} <= {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    deidentify_tree(make_settings(), source, tmp_path / "basic", tmp_path / "q2")
    for ds in _outputs(tmp_path / "basic"):
        assert ds.StationName == "DEIDENTIFIED" and not ds.PatientSex


def test_clean_descriptors_keeps_text_without_identifiers(tmp_path, planted_tree, make_settings):
    source, patients = planted_tree
    deidentify_tree(make_settings(clean_descriptors=True), source, tmp_path / "out", tmp_path / "q")
    descriptions = {str(ds.StudyDescription) for ds in _outputs(tmp_path / "out")}
    assert descriptions == {"CT for * *", "MR for * *"}  # both name parts gone, the description stays


def test_key_file_is_private_and_outside_output(tmp_path, settings, planted_tree):
    source, _ = planted_tree
    deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    assert os.stat(settings.key_file).st_mode & 0o777 == 0o600
    assert not list((tmp_path / "out").rglob("*.enc"))
    inside = settings.model_copy(update={"key_file": tmp_path / "out" / "key.enc"})
    with pytest.raises(DeidError, match="inside the output folder"):
        deidentify_tree(inside, source, tmp_path / "out", tmp_path / "q")
    os.chmod(settings.key_file, 0o644)
    with pytest.raises(DeidError, match="readable by others"):
        deidentify_tree(settings, source, tmp_path / "out2", tmp_path / "q2")


def test_one_run_at_a_time_per_key(tmp_path, settings):
    first = open_site_key(settings)
    with pytest.raises(DeidError, match="in use by another"):
        open_site_key(settings)
    open_site_key(settings, persist=False)  # read-only users (scan) are not blocked
    first.close()
    open_site_key(settings).close()


def test_dry_run_writes_nothing(tmp_path, settings, planted_tree):
    source, _ = planted_tree
    report = deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q", dry_run=True)
    assert report.written == 12
    assert not (tmp_path / "out").exists() and not settings.key_file.exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"DEIDENTIFIED"}),  # Content Sequence D: text dummied
        ({"clean_structured_content": True}, None),  # C: text kept, identifiers cleaned
    ],
)
def test_structured_report_text_follows_content_sequence_action(tmp_path, options, expected):
    path = get_testdata_file("test-SR.dcm")
    before = [e.value for e in dcmread(path).iterall() if e.keyword == "TextValue"]
    ds = dcmread(path)
    deidentify_dataset(ds, Profile(ProfileOptions(**options)), SiteKey(tmp_path / "key.json", "SUBJ", persist=False))
    after = [e.value for e in ds.iterall() if e.keyword == "TextValue"]
    codes = [e.value for e in ds.iterall() if e.keyword == "CodeMeaning"]
    assert len(after) == len(before) > 0
    assert set(after) == (expected or set(before))
    assert "Diagnosis" in codes  # coded concepts are vocabulary and stay
