"""Fail closed: files that do not parse cleanly, and objects likely to carry burned-in
identifiers, are quarantined with a reason and never written (half-cleaned or otherwise)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from deploy.demo.synthetic_dicom import random_patient, write_series
from siteprep.deid.run import deidentify_tree
from siteprep.deid.settings import DeidSettings, PixelSafety


@pytest.fixture
def slice_file(tmp_path) -> Path:
    pixels = np.random.default_rng(5).normal(0, 300, (2, 32, 32)).astype(np.int16)
    return write_series(pixels, tmp_path / "gen", random_patient(random.Random(1)))[0]


def _run(tmp_path: Path, files: dict[str, bytes], settings: DeidSettings | None = None):
    source = tmp_path / "src"
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    settings = settings or DeidSettings(site="site-a", key_file=tmp_path / "key.enc")
    report = deidentify_tree(settings, source, tmp_path / "out", tmp_path / "quarantine")
    reasons = {
        json.loads(p.read_text())["source"]: json.loads(p.read_text())["reason"]
        for p in (tmp_path / "quarantine").glob("*.reason.json")
    }
    return report, reasons


def _modified(path: Path, **attributes) -> bytes:
    ds = dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = path.with_name("modified.dcm")
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


def test_unparseable_files_are_quarantined(tmp_path, slice_file):
    data = slice_file.read_bytes()
    explicit = b"1.2.840.10008.1.2.1\x00"
    assert data.count(explicit) == 1
    files = {
        "ok.dcm": data,
        "truncated.dcm": data[:-300],
        "no_preamble.dcm": Path(get_testdata_file("no_meta.dcm")).read_bytes(),
        "missing_ts.dcm": Path(get_testdata_file("meta_missing_tsyntax.dcm")).read_bytes(),
        # file meta says Implicit VR, the data set is Explicit VR: pydicom would guess
        "contradictory_ts.dcm": data.replace(explicit, b"1.2.840.10008.1.2\x00\x00\x00"),
        "notes/README": b"patient list: nothing to see here\n",
    }
    report, reasons = _run(tmp_path, files)
    assert report.written == 1
    assert reasons == {
        "truncated.dcm": "truncated",
        "no_preamble.dcm": "not_dicom",
        "missing_ts.dcm": "missing_transfer_syntax",
        "contradictory_ts.dcm": "parse_warning",
        "notes/README": "not_dicom",
    }
    assert sum(report.quarantined.values()) == 5
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1
    assert len(list((tmp_path / "quarantine").glob("*.dcm"))) == 5


def test_burned_in_risks_are_quarantined(tmp_path, slice_file):
    flat = dcmread(slice_file)
    flat.PixelData = np.full((32, 32), 7, dtype=np.uint16).tobytes()
    flat_path = tmp_path / "flat.dcm"
    flat.save_as(flat_path, enforce_file_format=True)
    text = np.zeros((32, 32), dtype=np.uint16)
    text[::3, ::2] = 4000  # two grey levels: a rendering of text
    files = {
        "burned.dcm": _modified(slice_file, BurnedInAnnotation="YES"),
        "us.dcm": _modified(slice_file, Modality="US"),
        "sc.dcm": _modified(slice_file, SOPClassUID=SecondaryCaptureImageStorage),
        "scanned.dcm": _modified(slice_file, ConversionType="SD"),
        "flat.dcm": flat_path.read_bytes(),
        "text.dcm": _modified(slice_file, PixelData=text.tobytes()),
    }
    report, reasons = _run(tmp_path, files)
    assert report.written == 0
    assert reasons == {
        "burned.dcm": "burned_in_annotation",
        "us.dcm": "risky_modality",
        "sc.dcm": "risky_sop_class",
        "scanned.dcm": "scanned_or_captured",
        "flat.dcm": "low_intensity_variance",
        "text.dcm": "low_intensity_variance",
    }


def test_ultrasound_cleaning_rule_blanks_outside_regions(tmp_path, slice_file):
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 4, 6
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 20, 25
    data = _modified(slice_file, Modality="US", SequenceOfUltrasoundRegions=[region])
    settings = DeidSettings(
        site="site-a", key_file=tmp_path / "key.enc", pixels=PixelSafety(blank_outside_ultrasound_regions=True)
    )
    report, reasons = _run(tmp_path, {"us.dcm": data}, settings)
    assert report.written == 1 and not reasons
    (output,) = (tmp_path / "out").rglob("*.dcm")
    ds = dcmread(output)
    pixels = ds.pixel_array
    original = dcmread(slice_file).pixel_array
    assert not pixels[:6].any() and not pixels[:, :4].any() and not pixels[26:].any() and not pixels[:, 21:].any()
    assert np.array_equal(pixels[6:26, 4:21], original[6:26, 4:21])
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


def test_jpeg2000_low_pass_sample_matches_a_strided_sample():
    """The burned-in check's cheap JPEG 2000 path sees the same spread as a full decode."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from siteprep.deid.pixels import (
        SAMPLE_STRIDE,
        _first_frame,
        _reduced_jpeg2000_sample,
    )

    for name in ("MR2_J2KR.dcm", "MR2_J2KI.dcm", "RG3_J2KR.dcm"):
        dataset = dcmread(get_testdata_file(name))
        reduced = _reduced_jpeg2000_sample(dataset)
        assert reduced is not None, name
        full = _first_frame(dataset)[::SAMPLE_STRIDE, ::SAMPLE_STRIDE]
        assert reduced.shape == full.shape
        assert abs(reduced.std() - full.std()) < 0.05 * full.std(), name
        assert abs(np.unique(reduced).size - np.unique(full).size) < 0.1 * np.unique(full).size, name
