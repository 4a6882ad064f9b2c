"""Every transfer syntax a PACS exports: the same CT series written in each is de-identified (its
pixels checked, not quarantined as undecodable), ingested, and decodes to the same voxels
(lossless syntaxes) or close to them (lossy ones).

The files are encoded by real codecs: pydicom's own encoders (RLE, JPEG-LS, JPEG 2000, deflate)
and, for the JPEG processes pydicom cannot encode, libjpeg-turbo through imagecodecs, as a
modality's DICOM exporter would.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from deploy.demo.synthetic_dicom import random_patient, write_series
from siteprep import pixel_codecs
from siteprep.deid.keys import open_site_key
from siteprep.deid.run import RunReport, deidentify_tree
from siteprep.deid.settings import DeidSettings
from siteprep.ingest import IngestReport, ingest

SHAPE = (4, 40, 48)  # slices, rows, columns
LOSSLESS = (
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
)
# Lossy syntaxes, each with its bound on the error: (mean, max) in Hounsfield units over a volume
# spanning about 1,900 HU with sharp edges (ringing at edges sets the max). JPEG baseline is 8-bit
# only (ISO 10918-1 Process 1), so its series holds 8 stored bits: steps of 16 HU.
LOSSY = {JPEGBaseline8Bit: (12, 160), JPEGExtended12Bit: (4, 120), JPEGLSNearLossless: (3, 3), JPEG2000: (8, 160)}
SYNTAXES = (*LOSSLESS, *LOSSY)


def smooth_volume(rng: np.random.Generator) -> np.ndarray:
    """Soft tissue-like blobs in textured air: smooth enough that lossy codecs stay near the truth."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    volume = np.full(SHAPE, -800.0)
    for _ in range(4):
        centre, radius = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.3, 0.6)
        inside = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < radius**2
        volume[inside] = rng.uniform(-100, 900)
    return np.rint(volume + 150 * np.sin(6 * x) * np.cos(5 * y)).astype(np.int16)


def _encapsulate_jpeg(ds: Dataset, syntax: UID, **options) -> None:
    """Process 1, 2/4 and 14 JPEG through libjpeg-turbo: pydicom has no encoder for them."""
    stored = ds.pixel_array
    if syntax == JPEGBaseline8Bit:
        stored = np.rint(stored / 16).astype(np.uint8)  # 12 -> 8 stored bits, the slope absorbs it
        ds.RescaleSlope = f"{float(ds.RescaleSlope) * 16:g}"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    frame = imagecodecs.jpeg8_encode(stored, bitspersample=int(ds.BitsStored), **options)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax


def encode_as(path: Path, syntax: UID) -> None:
    """Rewrite one uncompressed file in ``syntax``."""
    ds = dcmread(path)
    if syntax == JPEGBaseline8Bit or syntax == JPEGExtended12Bit:
        _encapsulate_jpeg(ds, syntax, level=95)
    elif syntax == JPEGLossless:
        _encapsulate_jpeg(ds, syntax, lossless=True, predictor=6)
    elif syntax == JPEGLosslessSV1:
        _encapsulate_jpeg(ds, syntax, lossless=True, predictor=1)
    elif syntax == JPEGLSNearLossless:
        ds.compress(syntax, jls_error=3)
    elif syntax == JPEG2000:
        ds.compress(syntax, j2k_cr=[5])
    elif syntax.is_compressed:
        ds.compress(syntax)
    else:
        ds.file_meta.TransferSyntaxUID = syntax  # deflate happens on write
    ds.save_as(path, enforce_file_format=True)
    assert dcmread(path).file_meta.TransferSyntaxUID == syntax


@dataclass
class Site:
    root: Path
    deid: RunReport
    ingest: IngestReport
    truth: dict[UID, np.ndarray]  # the volume each syntax's series was written from
    series: dict[UID, str]  # its de-identified SeriesInstanceUID


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    """One series per transfer syntax, de-identified and ingested together."""
    root = tmp_path_factory.mktemp("syntaxes")
    rng = np.random.default_rng(5)
    truth, original = {}, {}
    for index, syntax in enumerate(SYNTAXES):
        truth[syntax], original[syntax] = smooth_volume(rng), generate_uid()
        patient = random_patient(random.Random(index))
        raw = root / "raw" / f"s{index}"
        for path in write_series(truth[syntax], raw, patient, spacing=(2.0, 0.8, 0.8), series_uid=original[syntax]):
            encode_as(path, syntax)
    settings = DeidSettings(site="site-a", key_file=root / "secret" / "key.enc")
    deid = deidentify_tree(settings, root / "raw", root / "deid", root / "quarantine")
    (root / "labels").mkdir()
    for uid in original.values():  # labels named by the original UID, as annotators name them
        label = np.zeros(SHAPE[::-1], dtype=np.uint8)  # (columns, rows, slices), ingest's axis order
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labels" / f"{uid}.nii.gz")
    key = open_site_key(settings, persist=False)
    report = ingest(root / "deid", root / "data", root / "labels", val_fraction=0.0, key=key)
    return Site(root, deid, report, truth, {syntax: key.uid(uid) for syntax, uid in original.items()})


@pytest.mark.parametrize("syntax", [s for s in SYNTAXES if s.is_compressed], ids=lambda s: s.name)
def test_a_decoder_is_installed(syntax):
    assert get_decoder(syntax).is_available, f"{syntax.name}: {get_decoder(syntax).missing_dependencies}"


def test_every_file_is_de_identified_none_quarantined(site):
    assert dict(site.deid.quarantined) == {}
    assert site.deid.written == len(SYNTAXES) * SHAPE[0]
    assert not (site.root / "quarantine").exists() or not any((site.root / "quarantine").iterdir())


def test_every_series_ingests(site):
    assert site.ingest.skipped == {} and site.ingest.missing_labels == []
    assert len(site.ingest.cases) == len(SYNTAXES)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_ingested_voxels_match_the_source(site, syntax):
    uid = site.series[syntax]
    written = [p for p in (site.root / "deid").rglob("*.dcm") if dcmread(p).SeriesInstanceUID == uid]
    assert len(written) == SHAPE[0] and all(dcmread(p).file_meta.TransferSyntaxUID == syntax for p in written)
    (case,) = [c for c in site.ingest.cases if c.case_id.endswith(hashlib.sha256(uid.encode()).hexdigest()[:8])]
    image = np.asarray(nib.load(case.image).dataobj).transpose(2, 1, 0)  # back to (slices, rows, columns)
    error = np.abs(image.astype(np.int32) - site.truth[syntax].astype(np.int32))
    if syntax in LOSSY:
        mean, largest = LOSSY[syntax]
        assert 0 < error.mean() <= mean and error.max() <= largest, (error.mean(), error.max())
    else:
        assert error.max() == 0


def test_12_bit_jpeg_is_decoded_first_time_with_nothing_logged(tmp_path, caplog):
    """pydicom logs a traceback per plugin that refuses a frame: the 12-bit plugin is tried first."""
    path = write_series(smooth_volume(np.random.default_rng(1))[:2], tmp_path, random_patient(random.Random(1)))[0]
    encode_as(path, JPEGExtended12Bit)
    with caplog.at_level(logging.DEBUG, logger="pydicom"):
        assert dcmread(path).pixel_array.shape == SHAPE[1:]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_pydicom_plugins_for_jpeg_extended_are_the_ones_re_added():
    """siteprep.pixel_codecs re-adds pydicom's own JPEG Extended plugins after its own, by name."""
    decoder = get_decoder(JPEGExtended12Bit)
    labels = set(decoder.available_plugins) | {line.split(" - ")[0] for line in decoder.missing_dependencies}
    assert labels == {pixel_codecs.PLUGIN, *pixel_codecs.PYDICOM_PLUGINS}
