"""Property: identifiers planted anywhere (random attributes, nested sequences, private blocks,
undecoded UN bytes, free text) are gone after de-identification, in every byte of the output."""

from __future__ import annotations

import string

import numpy as np
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from siteprep.deid.run import deidentify_tree
from siteprep.deid.settings import DeidSettings, ProfileOptions

# Public text attributes with different fates in Table E.1-1: kept (Manufacturer, SoftwareVersions,
# CodeMeaning...), removed (ImageComments), dummied, cleaned under options, or not listed at all.
CARRIERS = [  # never an attribute of the planted identity itself, which would overwrite it
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ConvolutionKernel",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "ImageComments",
    "StationName",
    "AdditionalPatientHistory",
    "ContrastBolusAgent",
    "FilterType",
    "PositionReferenceIndicator",
    "AcquisitionDeviceProcessingDescription",
    "DerivationDescription",
    "TextValue",
    "CodeMeaning",
    "ContentLabel",
    "ContentDescription",
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
    "PerformedProcedureStepDescription",
    "PatientComments",
]
NESTERS = [
    "RequestAttributesSequence",
    "AnatomicRegionSequence",
    "ReferencedStudySequence",
    "ProcedureCodeSequence",
    "ContentSequence",
    "PerformedProtocolCodeSequence",
]
# A "Zq" prefix keeps generated names from being substrings of what the output legitimately
# says ("MODIFI" in MODIFIED), which is no leak but would fail the plain substring check.
LETTERS = st.text(alphabet=string.ascii_letters, min_size=4, max_size=10).map(lambda s: f"Zq{s}")
DIGITS = st.text(alphabet=string.digits, min_size=7, max_size=10)


@st.composite
def identity(draw) -> dict[str, str]:
    year = draw(st.integers(1930, 2020))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    return {
        "PatientName": f"{draw(LETTERS)}^{draw(LETTERS)}",
        "PatientID": f"P{draw(DIGITS)}",
        "AccessionNumber": f"A{draw(DIGITS)}",
        "PatientBirthDate": f"{year:04d}{month:02d}{day:02d}",
        "InstitutionName": f"{draw(LETTERS)} Hospital",
        "ReferringPhysicianName": f"{draw(LETTERS)}^{draw(LETTERS)}",
        "StudyInstanceUID": generate_uid(),
    }


def _planted_values(ids: dict[str, str]) -> list[str]:
    values = list(ids.values())
    for key in ("PatientName", "ReferringPhysicianName"):
        values.extend(ids[key].split("^"))
    return values


@st.composite
def planted_dataset(draw) -> tuple[Dataset, list[str]]:
    ids = draw(identity())
    values = _planted_values(ids)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.SourceApplicationEntityTitle = ids["PatientID"][:16]
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in ids.items():
        setattr(ds, keyword, value)
    ds.StudyDate = ids["PatientBirthDate"]
    pick = st.sampled_from(values)
    for _ in range(draw(st.integers(1, 6))):  # copies in random top-level attributes, as free text
        setattr(ds, draw(st.sampled_from(CARRIERS)), f"seen {draw(pick)} ok")
    for _ in range(draw(st.integers(1, 3))):  # ... and inside nested sequences, up to depth 3
        item = Dataset()
        setattr(item, draw(st.sampled_from(CARRIERS)), draw(pick))
        item.PatientName = draw(pick)
        for _ in range(draw(st.integers(0, 2))):
            outer = Dataset()
            setattr(outer, draw(st.sampled_from(NESTERS)), [item])
            item = outer
        setattr(ds, draw(st.sampled_from(NESTERS)), [item])
    group = draw(st.sampled_from([0x0009, 0x0011, 0x0029, 0x7FD1]))
    block = ds.private_block(group, draw(st.sampled_from(["ACME 1.0", "SIEMENS CSA HEADER"])), create=True)
    block.add_new(0x10, "LO", draw(pick))
    block.add_new(0x11, "UN", draw(pick).encode())
    private_item = Dataset()
    private_item.PatientID = ids["PatientID"]
    block.add_new(0x12, "SQ", [private_item])
    ds.add_new(0x00231001, "UN", f"{draw(pick)}".encode())  # odd group, no creator: still private
    ds.add_new(0x00450010, "UN", draw(pick).encode().ljust(8, b" "))  # unknown public tag as UN
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 4000, (32, 32), dtype=np.uint16).tobytes()
    return ds, values


@hsettings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=planted_dataset(), clean_descriptors=st.booleans())
def test_planted_identifiers_never_survive(tmp_path_factory, case, clean_descriptors):
    dataset, planted = case
    root = tmp_path_factory.mktemp("prop")
    (root / "raw").mkdir()
    dataset.save_as(root / "raw" / "in.dcm", enforce_file_format=True)
    settings = DeidSettings(
        site="site-a", key_file=root / "key.enc", options=ProfileOptions(clean_descriptors=clean_descriptors)
    )
    report = deidentify_tree(settings, root / "raw", root / "out", root / "q")
    assert report.written == 1, report.quarantined
    assert report.residual_scan.files_with_residuals == 0
    (output,) = (root / "out").rglob("*.dcm")
    data = output.read_bytes().lower()
    for value in planted:
        assert value.lower().encode() not in data, value
