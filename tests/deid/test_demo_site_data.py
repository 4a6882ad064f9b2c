"""The demo's sites start from raw DICOM with planted identifiers and reach training cases through
the site path (deid -> ingest -> check): same voxels as the synthetic volumes, no identifier left."""

from __future__ import annotations

import queue
import stat
from fractions import Fraction
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread

from client.cases import discover_cases
from common.errors import SiteDataError
from deploy.demo.site_data import prepare_site, prepare_sites
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from siteprep.ingest import _held_out

SITE = DEMO_SITES[2]  # site-c: CT with negative values and a range wider than 12 bits
CASES, SIZE, SEED = 3, 20, 7
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("demo") / SITE.name
    events: queue.Queue = queue.Queue()
    result = prepare_site(SITE, site_dir, CASES, 1 / 3, SIZE, SEED, events)
    return site_dir, result, [events.get_nowait() for _ in range(events.qsize())]


def _planted_values(export: Path) -> set[str]:
    """Every identifying value in the raw export, read back from its files."""
    values = set()
    for path in export.rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        values |= {str(ds.get(keyword)) for keyword in IDENTIFYING if ds.get(keyword)}
    return {v for v in values if len(v) >= 6}


def test_every_file_is_written_and_none_holds_an_identifier(prepared):
    site_dir, result, _ = prepared
    assert result.exported == result.written > CASES * SIZE and result.quarantined == 0
    assert result.files_with_residuals == 0 and result.patients == CASES
    planted = _planted_values(site_dir / "pacs-export")
    assert len(planted) > 10 * CASES
    shared = [p for p in (site_dir / "deid").rglob("*")] + [p for p in (site_dir / "data").rglob("*")]
    for path in shared:
        text = str(path.relative_to(site_dir))
        blob = path.read_bytes() if path.is_file() else b""
        for value in planted:
            assert value not in text, f"{value} in the path {text}"
            assert value.encode() not in blob, f"{value} in {text}"


def test_key_stays_outside_the_output_private_and_encrypted(prepared):
    site_dir, _, _ = prepared
    key = site_dir / "deid-key.enc"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((site_dir / "deid-passphrase").stat().st_mode) == 0o600
    assert not list((site_dir / "deid").rglob("deid-key*"))
    held = key.read_bytes()
    assert held.startswith(b'{"check":') and f'"site":"{SITE.name}"'.encode() in held.split(b"\n")[0]
    subjects = {p.name for p in (site_dir / "deid").iterdir() if p.is_dir()}
    for value in _planted_values(site_dir / "pacs-export") | subjects:
        assert value.encode() not in held, value


def test_ingested_cases_hold_the_synthetic_volumes(prepared, tmp_path):
    """Same voxels (to within half the fitted rescale step) and the very same labels, one series each."""
    site_dir, result, _ = prepared
    reference = write_site(SITE, tmp_path / "nifti", CASES, 0, SIZE, SEED)
    expected = [(np.asarray(nib.load(c.image).dataobj), np.asarray(nib.load(c.label).dataobj)) for c in reference]
    cases = discover_cases(SITE.name, site_dir / "data")
    assert len(cases) == CASES and [c.split for c in cases].count("val") == result.val == 1
    matched = set()
    for case in cases:
        image, label = nib.load(case.image), np.asarray(nib.load(case.label).dataobj)
        index = next(i for i, (_, truth) in enumerate(expected) if np.array_equal(label, truth))
        step = max(1.0, float(np.ptp(expected[index][0])) / 4095)
        assert np.abs(image.get_fdata() - expected[index][0]).max() <= step / 2 + 1e-3
        assert np.allclose(image.header.get_zooms(), (1.0, 1.0, 1.0))
        assert np.allclose(image.affine, nib.load(case.label).affine)
        matched.add(index)
    assert matched == set(range(CASES))


def test_progress_reports_every_stage_in_order(prepared):
    site_dir, result, events = prepared
    stages = [(label, total) for site, label, total in events if label is not None]
    assert [label for label, _ in stages] == [
        "write raw DICOM export",
        "de-identify",
        "residual scan",
        "ingest: read headers",
        "ingest: build volumes",
    ]
    assert all(site == SITE.name for site, _, _ in events)
    steps, current = {}, None
    for _, label, _ in events:
        current = label or current
        steps[current] = steps.get(current, 0) + (label is None)
    assert steps == {label: total for label, total in stages}


@pytest.mark.parametrize(
    ("count", "fraction", "held_out"),
    [(56, Fraction(8, 56), 8), (10, Fraction(1, 5), 2), (3, Fraction(1, 3), 1), (7, Fraction(0), 0)],
)
def test_validation_share_is_exact_and_spread(count, fraction, held_out):
    picks = [n for n in range(count) if _held_out(n, fraction)]
    assert len(picks) == held_out
    assert fraction != Fraction(1, 5) or picks == [4, 9]


def test_sites_prepare_in_parallel_and_a_failure_names_its_site(tmp_path):
    """The demo's orchestration: one spawned process per site, progress back to the caller."""
    events: list = []
    sites = {DEMO_SITES[0]: tmp_path / "a", DEMO_SITES[2]: tmp_path / "c"}
    results = prepare_sites(sites, 2, 0.5, SIZE, SEED, events.append)
    assert [(r.site, r.train, r.val, r.files_with_residuals) for r in results] == [
        ("site-a", 1, 1, 0),
        ("site-c", 1, 1, 0),
    ]
    assert {site for site, _, _ in events} == {"site-a", "site-c"}
    with pytest.raises(SiteDataError, match="site site-b: data preparation failed: ValueError"):
        prepare_sites({DEMO_SITES[1]: tmp_path / "b"}, 1, 0.0, SIZE, SEED, events.append)  # lesions > volume
