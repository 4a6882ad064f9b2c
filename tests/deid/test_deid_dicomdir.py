"""A source DICOMDIR is not copied: the output gets a new one built from the de-identified files."""

from __future__ import annotations

from pydicom import dcmread
from pydicom.fileset import FileSet

from siteprep.deid.keys import open_site_key
from siteprep.deid.profile import Profile
from siteprep.deid.run import deidentify_tree
from siteprep.deid.scan import scan_tree


def test_dicomdir_is_rebuilt_from_deidentified_files(tmp_path, settings, planted_tree):
    raw, patients = planted_tree
    media = FileSet()
    for path in sorted(raw.rglob("*.dcm")):
        media.add(path)
    source = tmp_path / "media"
    media.write(source)  # source/DICOMDIR with records holding the planted names, IDs and dates
    assert patients[0].patient_id.encode() in (source / "DICOMDIR").read_bytes()

    out = tmp_path / "out"
    report = deidentify_tree(settings, source, out, tmp_path / "q")
    summary = report.as_dict()
    assert report.written == 12 and not report.quarantined
    assert summary["notes"] == ["source DICOMDIR replaced by a rebuilt one"]
    assert summary["residual_scan"]["files_scanned"] == 1 + 2 * 12
    assert summary["residual_scan"]["files_with_residuals"] == 0

    rebuilt = FileSet(dcmread(out / "DICOMDIR"))
    written = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.rglob("*.dcm")}
    assert {instance.SOPInstanceUID for instance in rebuilt} == written
    assert {instance.PatientID for instance in rebuilt}.isdisjoint({p.patient_id for p in patients})
    assert all("PixelData" in instance.load() for instance in rebuilt)  # members are whole files

    key = open_site_key(settings, persist=False)
    independent = scan_tree(out, source, Profile(settings.options), key)
    assert independent.files_scanned == 1 + 2 * 12 and not independent.findings


def test_rebuilt_dicomdir_indexes_only_the_source_file_set(tmp_path, settings, planted_tree):
    raw, _ = planted_tree
    files = sorted(raw.rglob("*.dcm"))
    media = FileSet()
    for path in files[:4]:
        media.add(path)
    source = tmp_path / "media"
    media.write(source)  # indexes 4 files
    loose = source / "loose"
    loose.mkdir()
    for index, path in enumerate(files[4:]):  # on the media, but not in its index
        (loose / f"{index}.dcm").write_bytes(path.read_bytes())

    report = deidentify_tree(settings, source, tmp_path / "out", tmp_path / "q")
    assert report.written == 12 and report.as_dict()["notes"] == [
        "source DICOMDIR replaced by a rebuilt one (8 written files not indexed)"
    ]
    assert len(list(FileSet(dcmread(tmp_path / "out" / "DICOMDIR")))) == 4
    assert report.residual_scan.files_with_residuals == 0

    (source / "DICOMDIR").unlink()
    stale = dcmread(tmp_path / "out" / "DICOMDIR")  # a DICOMDIR whose members are not on this media
    for record in stale.DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            record.ReferencedFileID = ["GONE", "IM0001"]
    stale.save_as(source / "DICOMDIR")
    again = deidentify_tree(settings, source, tmp_path / "out2", tmp_path / "q2")
    assert again.as_dict()["notes"] == ["source DICOMDIR dropped: none of the files it indexed was written"]
    assert not (tmp_path / "out2" / "DICOMDIR").exists() and again.written == 12
