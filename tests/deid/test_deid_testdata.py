"""Every file shipped with pydicom's test data and pydicom-data (plus the character-set files) is
either de-identified with zero residual identifiers or quarantined with a reason; nothing crashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.errors import InvalidDicomError

from siteprep.deid.burned_in_text import TESSERACT_HINT, tesseract_path
from siteprep.deid.engine import deidentify_dataset
from siteprep.deid.keys import SiteKey, open_site_key
from siteprep.deid.profile import Profile
from siteprep.deid.run import deidentify_tree
from siteprep.deid.scan import needles, output_files, scan_file, scan_tree
from siteprep.deid.settings import BurnedInText, DeidSettings, PixelSafety, ProfileOptions


def _shipped_files() -> list[Path]:
    return sorted({Path(p) for p in get_testdata_files() + get_charset_files() if Path(p).is_file()})


def _copy_shipped(root: Path) -> dict[Path, Path]:
    """Each shipped file alone in a folder of its own under ``root / "src"``: copy -> original."""
    pytest.importorskip("data_store", reason="pydicom-data (the test extra) is not installed")
    originals = {}
    for index, path in enumerate(_shipped_files()):
        copy = root / "src" / f"{index:03d}" / path.name
        copy.parent.mkdir(parents=True)
        shutil.copyfile(path, copy)
        originals[copy] = path
    return originals


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    """As shipped: burned-in text redaction off, so every risky object is quarantined."""
    root = tmp_path_factory.mktemp("shipped")
    originals = _copy_shipped(root)
    settings = DeidSettings(site="site-a", key_file=root / "key.enc")
    report = deidentify_tree(settings, root / "src", root / "out", root / "quarantine")
    return root, settings, report, originals


def test_every_file_is_written_or_quarantined_with_a_reason(shipped_run):
    root, _, report, originals = shipped_run
    assert report.files_in == len(originals) > 250
    # a source DICOMDIR is neither written nor quarantined: the output gets a rebuilt one instead
    assert report.written + sum(report.quarantined.values()) + report.source_dicomdirs == report.files_in
    # each file is copied alone, so no source DICOMDIR's members are there: none is rebuilt
    assert report.source_dicomdirs and not (root / "out" / "DICOMDIR").exists()
    assert report.as_dict()["notes"] == ["source DICOMDIR dropped: none of the files it indexed was written"]
    reasons = [json.loads(p.read_text()) for p in (root / "quarantine").glob("*.reason.json")]
    assert len(reasons) == sum(report.quarantined.values())
    assert all(r["reason"] and r["detail"] for r in reasons)
    assert report.written > 100


def test_written_files_hold_no_original_identifier(shipped_run):
    root, settings, report, _ = shipped_run
    assert report.residual_scan.files_scanned == len(output_files(root / "out"))
    assert report.residual_scan.files_with_residuals == 0, report.residual_scan.findings[:5]
    key = open_site_key(settings, persist=False)
    independent = scan_tree(root / "out", root / "src", Profile(settings.options), key)
    assert independent.files_with_residuals == 0, independent.findings[:5]


def test_written_files_reread_with_pixels_unchanged(shipped_run):
    root, settings, _, originals = shipped_run
    key = open_site_key(settings, persist=False)
    pixels_by_new_uid: dict[str, set] = {}  # some shipped files share a SOP instance UID
    for copy in originals:
        try:
            original = dcmread(copy, force=True)  # bare data sets too: the run reads them when unambiguous
        except Exception:
            continue
        if "SOPInstanceUID" in original:
            pixels_by_new_uid.setdefault(key.uid(str(original.SOPInstanceUID)), set()).add(original.get("PixelData"))
    for path in (root / "out").rglob("*.dcm"):
        ds = dcmread(path)
        assert ds.get("PixelData") in pixels_by_new_uid[str(ds.SOPInstanceUID)], path


@pytest.mark.parametrize("path", [p for p in get_charset_files() if Path(p).is_file()], ids=lambda p: Path(p).name)
def test_character_sets_are_cleaned(tmp_path, path):
    """Charset files are secondary captures (quarantined by the pixel rule), so the header
    de-identifier is exercised on them directly: non-ASCII names must go too."""
    profile = Profile(ProfileOptions())
    try:
        ds = dcmread(path)
    except InvalidDicomError:
        pytest.skip("not DICOM (a text file): the run quarantines it")
    if "SOPInstanceUID" not in ds:
        pytest.skip("no SOP instance: the run quarantines it")
    outcome = deidentify_dataset(ds, profile, SiteKey(tmp_path / "key.json", "SUBJ", persist=False))
    out = tmp_path / "out.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert scan_file(out, needles(outcome.identifiers), out.name) == []


@pytest.mark.slow
@pytest.mark.skipif(tesseract_path() is None, reason=f"tesseract not installed; {TESSERACT_HINT}")
def test_with_text_redaction_risky_objects_are_cleaned_or_stay_quarantined(shipped_run, tmp_path):
    """With redaction on, risky objects that used to be quarantined are written, cleaned; the
    rest keep a reason. (About a minute of OCR: bench.burned_in_text reports the figures.)"""
    _, _, as_shipped, _ = shipped_run
    _copy_shipped(tmp_path)
    settings = DeidSettings(
        site="site-a", key_file=tmp_path / "key.enc", pixels=PixelSafety(burned_in_text=BurnedInText(enabled=True))
    )
    report = deidentify_tree(settings, tmp_path / "src", tmp_path / "out", tmp_path / "quarantine")
    assert report.residual_scan is not None and report.residual_scan.files_with_residuals == 0
    cleaned = [
        ds
        for ds in (dcmread(path) for path in (tmp_path / "out").rglob("*.dcm"))
        if "113101" in {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    ]
    assert report.written - as_shipped.written > 30  # files; some share a SOP instance, hence one output
    assert len(cleaned) > 20
    assert all(ds.BurnedInAnnotation == "NO" and not ds.file_meta.TransferSyntaxUID.is_encapsulated for ds in cleaned)
    # colour captures other than ultrasound may show a face: they stay quarantined (OT-PAL-8-face.dcm among them)
    assert all(ds.get("Modality") == "US" or ds.PhotometricInterpretation.startswith("MONOCHROME") for ds in cleaned)
