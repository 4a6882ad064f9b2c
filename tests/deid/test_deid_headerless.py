"""Files without preamble and file meta, as older archives export them: de-identified with their
meta rebuilt when exactly one encoding reads them completely, quarantined as not DICOM otherwise."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deploy.demo.synthetic_dicom import random_patient, write_series
from siteprep.deid.run import deidentify_tree

SHAPE = (3, 12, 14)


def write_bare(path: Path, syntax) -> None:
    """Rewrite a PS3.10 file as only its data set in ``syntax``: no preamble, no 'DICM', no meta."""
    ds = dcmread(path)
    if not syntax.is_little_endian:  # pydicom re-encodes the header, not OW bytes: swap them as a BE writer would
        ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
    ds.preamble = None
    del ds.file_meta
    dcmwrite(path, ds, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    assert path.read_bytes()[128:132] != b"DICM"


def bare_series(folder: Path, syntax, seed: int = 1) -> tuple[np.ndarray, list[Path]]:
    volume = np.random.default_rng(seed).normal(40, 300, SHAPE).astype(np.int16)
    files = write_series(volume, folder, random_patient(random.Random(seed)))
    for path in files:
        write_bare(path, syntax)
    return volume, files


def quarantine_reasons(source: Path, quarantine: Path) -> dict[str, tuple[str, str]]:
    """(reason, detail) by source file name; the quarantine names files by a hash of their path."""
    found = {}
    for path in source.rglob("*"):
        name = hashlib.sha256(str(path.relative_to(source)).encode()).hexdigest()[:20]
        if (record := quarantine / f"{name}.reason.json").exists():
            reason = json.loads(record.read_text())
            found[path.name] = (reason["reason"], reason["detail"])
    return found


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian], ids=lambda s: s.name
)
def test_a_bare_series_is_de_identified_with_its_meta_rebuilt(tmp_path, make_settings, syntax):
    volume, files = bare_series(tmp_path / "raw", syntax)
    report = deidentify_tree(make_settings(), tmp_path / "raw", tmp_path / "out", tmp_path / "quarantine")
    assert report.written == report.bare_data_sets == len(files) and not report.quarantined
    assert report.residual_scan.files_with_residuals == 0
    written = sorted((tmp_path / "out").rglob("*.dcm"), key=lambda p: dcmread(p).InstanceNumber)
    for path, plane in zip(written, volume, strict=True):
        ds = dcmread(path)  # strict PS3.10 reading: preamble, 'DICM' and a file meta are there now
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
        assert np.array_equal(ds.pixel_array.astype(np.int32) - 1024, plane)


def test_bare_files_that_do_not_read_unambiguously_are_quarantined(tmp_path, make_settings):
    raw = tmp_path / "raw"
    _, files = bare_series(raw / "series", ImplicitVRLittleEndian)
    truncated = raw / "truncated.dcm"
    truncated.write_bytes(files[0].read_bytes()[:-7])
    no_instance = raw / "no_instance.dcm"
    ds = dcmread(files[1], force=True)
    del ds.SOPInstanceUID
    dcmwrite(no_instance, ds, implicit_vr=True, little_endian=True)
    (raw / "pydicom_no_meta.dcm").write_bytes(Path(get_testdata_file("no_meta.dcm")).read_bytes())
    (raw / "notes.txt").write_text("(0008,0020) study date written as text\n")
    (raw / "group8.bin").write_bytes(b"\x08\x00" + bytes(range(256)) * 4)  # starts like one, is not
    report = deidentify_tree(make_settings(), raw, tmp_path / "out", tmp_path / "quarantine")
    assert report.written == report.bare_data_sets == len(files)
    reasons = quarantine_reasons(raw, tmp_path / "quarantine")
    assert {name: reason for name, (reason, _) in reasons.items()} == {
        "truncated.dcm": "truncated",
        "no_instance.dcm": "not_dicom",
        "pydicom_no_meta.dcm": "not_dicom",
        "notes.txt": "not_dicom",
        "group8.bin": "not_dicom",
    }
    assert "Implicit VR Little Endian: no SOPClassUID/SOPInstanceUID" in reasons["no_instance.dcm"][1]
