"""The site administrator's path end to end, through the CLI commands: raw DICOM with planted
identifiers -> `deid` -> `scan` -> `ingest` (DICOM-SEG via highdicom) -> `check`."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import typer
from pydicom import dcmread
from typer.testing import CliRunner

from client.cases import discover_cases, write_index
from common.errors import SiteDataError
from deploy.demo.synthetic_dicom import random_patient, write_segmentation, write_series
from insite.cli import site_data

SHAPE = (5, 16, 20)  # slices, rows, columns


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    site_data.register(app)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(app, [str(a) for a in args])
        if ok:
            assert result.exit_code == 0, (result.stdout, result.exception)
        return result

    return invoke


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Raw DICOM for three patients (+ one unlabeled series and a stray file), volumes kept."""
    root = tmp_path_factory.mktemp("site")
    rng, noise = random.Random(11), np.random.default_rng(11)
    truth = {}
    for index in range(3):
        patient = random_patient(rng)
        image = noise.normal(40, 300, SHAPE).astype(np.int16)
        label = np.zeros(SHAPE, dtype=np.uint8)
        label[1:4, 3 + index : 9, 5:12] = 1
        files = write_series(
            image, root / "raw" / f"p{index}" / "ct", patient, spacing=(2.5, 0.7, 0.9), origin=(-10.0, 20.0, 30.0)
        )
        write_segmentation(label, files, root / "raw" / f"p{index}" / "seg" / "seg.dcm")
        truth[patient.patient_id] = (image, label)
        if index == 0:
            write_series(image[:3], root / "raw" / "p0" / "unlabeled", patient, series_number=2)
    (root / "raw" / "notes.txt").write_text("Ward list\n")
    config = root / "deid.toml"
    config.write_text(f'[deid]\nsite = "site-a"\nkey_file = "{root / "secret" / "key.enc"}"\n')
    return root, config, truth


def test_help_describes_the_arguments(cli):
    """What SOURCE and DST mean is in --help (lost when typer and click disagree on Argument help)."""
    help_text = " ".join(cli("ingest", "--help").stdout.replace("│", " ").split())
    assert "training folder to write" in help_text and "output of `insite site deid`" in help_text


def test_site_path_end_to_end(cli, site):
    root, config, truth = site
    out = root / "out"
    summary = json.loads(cli("deid", root / "raw", out, "--config", config, "--json").stdout)
    assert summary["files"] == {"in": 22, "written": 21, "duplicates": 0, "bare_data_sets": 0, "quarantined": 1}
    assert summary["quarantined_by_reason"] == {"not_dicom": 1}
    assert summary["residual_scan"]["files_with_residuals"] == 0
    assert summary["actions_per_attribute"]["PatientName"]
    assert Path(summary["report"]).is_file() and Path(summary["report"]).parent == out
    assert not list(out.rglob("key.enc")) and (root / "secret" / "key.enc").is_file()

    scan = json.loads(cli("scan", out, "--original", root / "raw", "--config", config, "--json").stdout)
    assert scan["files_with_residuals"] == 0 and scan["files_scanned"] == 21

    ingest = json.loads(cli("ingest", out, root / "data", "--json").stdout)
    assert ingest["cases"] == 3 and len(ingest["missing_labels"]) == 1 and not ingest["skipped"]
    cases = discover_cases("test", root / "data")
    assert len(cases) == 3
    matched = 0
    for case in cases:
        image = np.asarray(nib.load(case.image).dataobj)
        label = np.asarray(nib.load(case.label).dataobj)
        for original_image, original_label in truth.values():
            if np.array_equal(image, original_image.transpose(2, 1, 0)):
                assert np.array_equal(label, original_label.transpose(2, 1, 0))
                matched += 1
        assert np.allclose(nib.load(case.image).header.get_zooms(), (0.9, 0.7, 2.5))
        assert "".join(nib.aff2axcodes(nib.load(case.image).affine)) == "LPS"
    assert matched == 3

    check = json.loads(cli("check", root / "data", "--json").stdout)
    assert check["ok"] and all(c["label_values"] == [0, 1] for c in check["cases"])


def test_scan_finds_a_planted_leak(cli, site, tmp_path):
    root, config, _ = site
    out = tmp_path / "out"
    cli("deid", root / "raw", out, "--config", config, "--json")
    leaked = next((root / "raw" / "p1" / "ct").glob("*.dcm"))
    shutil.copyfile(leaked, out / "leak.dcm")
    result = cli("scan", out, "--original", root / "raw", "--config", config, "--json", ok=False)
    assert result.exit_code == 1 and "1 file(s)" in result.stderr  # a check that found a problem
    assert json.loads(result.stdout)["files_with_residuals"] == 1


def test_dry_run_writes_nothing(cli, site, tmp_path):
    root, config, _ = site
    summary = json.loads(cli("deid", root / "raw", tmp_path / "dry", "--config", config, "--json", "--dry-run").stdout)
    assert summary["dry_run"] and summary["files"]["written"] == 21
    assert not (tmp_path / "dry").exists()
    ingest = json.loads(cli("ingest", root / "raw", tmp_path / "data", "--json", "--dry-run").stdout)
    assert ingest["cases"] == 3 and not (tmp_path / "data").exists()


def test_check_reports_duplicates_and_too_few_cases(cli, site, tmp_path):
    root, _, _ = site
    data = tmp_path / "data"
    cli("ingest", root / "raw", data, "--json")  # ingest reads any DICOM series, raw ones too
    cases = discover_cases("test", data)
    copy = cases[0].image.with_name("copy.nii.gz")
    shutil.copyfile(cases[0].image, copy)
    write_index(data, [*cases, type(cases[0])("copy", copy, cases[0].label, "train")])
    result = cli("check", data, "--json", ok=False)
    assert result.exit_code == 1 and "problem(s)" in result.stderr
    assert any("duplicate series" in e for e in json.loads(result.stdout)["errors"])
    write_index(data, cases)
    result = cli("check", data, "--min-cases", "5", "--json", ok=False)
    assert any("at least 5" in e for e in json.loads(result.stdout)["errors"])


def test_label_volume_folder_labels_a_series_without_seg(cli, site, tmp_path):
    """A series without a DICOM-SEG is labelled by <SeriesInstanceUID>.nii.gz in --labels."""
    root, _, _ = site
    unlabeled = sorted((root / "raw" / "p0" / "unlabeled").glob("*.dcm"))
    uid = str(dcmread(unlabeled[0]).SeriesInstanceUID)
    _label_file(tmp_path / "labels", uid)
    result = json.loads(
        cli("ingest", root / "raw", tmp_path / "data", "--labels", tmp_path / "labels", "--json").stdout
    )
    assert result["cases"] == 4 and not result["missing_labels"]
    _assert_unlabeled_series_got_label_2(cli, tmp_path / "data")


def test_label_named_by_the_original_uid_is_matched_through_the_key(cli, site, tmp_path):
    """Annotations drawn before de-identification carry the original series UID; the key maps it."""
    root, config, _ = site
    cli("deid", root / "raw", tmp_path / "out", "--config", config, "--json")
    original_uid = str(dcmread(next((root / "raw" / "p0" / "unlabeled").glob("*.dcm"))).SeriesInstanceUID)
    _label_file(tmp_path / "labels", original_uid)

    without_key = cli("ingest", tmp_path / "out", tmp_path / "nokey", "--labels", tmp_path / "labels")
    assert "wrote 3 case(s)" in without_key.stdout and "--config" in without_key.stdout

    result = json.loads(
        cli(
            "ingest", tmp_path / "out", tmp_path / "data", "--labels", tmp_path / "labels", "--config", config, "--json"
        ).stdout
    )
    assert result["cases"] == 4 and not result["missing_labels"]
    _assert_unlabeled_series_got_label_2(cli, tmp_path / "data")
    assert not list((tmp_path / "data").rglob(f"*{original_uid}*"))


def test_ingest_names_a_missing_labels_folder_or_key(cli, site, tmp_path):
    root, _, _ = site
    result = cli("ingest", root / "raw", tmp_path / "data", "--labels", tmp_path / "nowhere", ok=False)
    assert isinstance(result.exception, SiteDataError) and "nowhere" in str(result.exception)
    config = tmp_path / "deid.toml"
    config.write_text(f'[deid]\nkey_file = "{tmp_path / "absent.json"}"\n')
    result = cli("ingest", root / "raw", tmp_path / "data", "--labels", tmp_path, "--config", config, ok=False)
    assert isinstance(result.exception, SiteDataError) and "absent.json" in str(result.exception)
    assert not (tmp_path / "absent.json").exists() and not (tmp_path / "data").exists()


def _label_file(folder: Path, uid: str) -> None:
    label = np.zeros((SHAPE[2], SHAPE[1], 3), dtype=np.uint8)  # NIfTI order: columns, rows, slices
    label[2:6, 3:7, 1] = 2
    folder.mkdir()
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / f"{uid}.nii.gz")


def _assert_unlabeled_series_got_label_2(cli, data: Path) -> None:
    check = json.loads(cli("check", data, "--json").stdout)
    assert sorted(tuple(c["label_values"]) for c in check["cases"]) == [(0, 1), (0, 1), (0, 1), (0, 2)]


def test_deid_works_from_any_folder_and_names_the_missing_key(cli, site, tmp_path, monkeypatch):
    """The profile ships with the package; only the site's key needs naming, and how is said."""
    root, _, _ = site
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    refused = cli("deid", root / "raw", tmp_path / "out0", "--json", ok=False)
    assert refused.exit_code != 0 and "insite site init" in str(refused.exception)
    assert "--key-file" in str(refused.exception) and not (tmp_path / "out0").exists()

    made = cli("init", "--site", "site-a", "--dir", "site-settings")
    assert "deid.toml" in made.stdout
    config = elsewhere / "site-settings" / "deid.toml"
    key = config.parent / "deid-key.enc"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600  # made by init, encrypted
    summary = json.loads(cli("deid", root / "raw", tmp_path / "out1", "--config", config, "--json").stdout)
    assert summary["files"]["written"] == 21
    again = cli("init", "--site", "site-a", "--dir", "site-settings", ok=False)
    assert "exists already" in str(again.exception)

    # the shipped profile with a key of the site's own: its header names the site
    by_key = cli("deid", root / "raw", tmp_path / "out2", "--key-file", "site-settings/deid-key.enc", "--json")
    assert json.loads(by_key.stdout)["files"]["written"] == 21
    assert sorted(p.name for p in (tmp_path / "out1").iterdir() if p.is_dir()) == sorted(
        p.name for p in (tmp_path / "out2").iterdir() if p.is_dir()
    )  # the same subjects
    new = cli("deid", root / "raw", tmp_path / "out3", "--key-file", "k.enc", "--json", ok=False)
    assert "insite site init --site" in str(new.exception) and not (elsewhere / "k.enc").exists()
